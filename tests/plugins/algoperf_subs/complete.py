"""Plain SGD that declares itself done after ``stop_after`` steps by raising TrainingCompleteError (optbench tests)."""

import torch
from algoperf import spec


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {"optimizer": torch.optim.SGD(model_params.parameters(), lr=hyperparameters.learning_rate)}


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters, batch,
                  loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
    if global_step >= hyperparameters.stop_after:
        raise spec.TrainingCompleteError("done")
    model = current_param_container
    optimizer_state["optimizer"].zero_grad(set_to_none=True)
    out, model_state = workload.model_fn(model, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True)
    d = workload.loss_fn(batch["targets"], out)
    (d["summed"] / d["n_valid_examples"]).backward()
    optimizer_state["optimizer"].step()
    return optimizer_state, model, model_state


def get_batch_size(workload_name):
    raise ValueError(workload_name)
