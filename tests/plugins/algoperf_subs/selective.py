"""Plain SGD whose data_selection draws two batches from the queue and trains on the second (optbench tests:
data_selection is called every step and may consume the queue as it likes). ``calls`` counts the calls."""

import torch
from algoperf import spec

calls = {"data_selection": 0}


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {"optimizer": torch.optim.SGD(model_params.parameters(), lr=hyperparameters.learning_rate)}


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters, batch,
                  loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
    model = current_param_container
    optimizer_state["optimizer"].zero_grad(set_to_none=True)
    out, model_state = workload.model_fn(model, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True)
    d = workload.loss_fn(batch["targets"], out)
    (d["summed"] / d["n_valid_examples"]).backward()
    optimizer_state["optimizer"].step()
    return optimizer_state, model, model_state


def get_batch_size(workload_name):
    raise ValueError(workload_name)


def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state, hyperparameters,
                   global_step, rng):
    calls["data_selection"] += 1
    next(input_queue)  # skipped
    return next(input_queue)
