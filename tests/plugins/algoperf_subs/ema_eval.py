"""Adam whose evaluations use an exponential moving average of the weights, swapped in by prepare_for_eval
(AlgoPerf v0.6's timed hook) and swapped back at the next update (optbench tests). ``calls`` counts the hooks."""

import torch
from algoperf import spec

calls = {"prepare_for_eval": 0, "swapped_back": 0}


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    params = list(model_params.parameters())
    return {"optimizer": torch.optim.Adam(params, lr=hyperparameters.learning_rate),
            "ema": [p.detach().clone() for p in params], "train_copy": None}


def _swap_back(model, state):
    if state["train_copy"] is not None:  # the previous evaluation left the averaged weights in the model
        with torch.no_grad():
            for p, w in zip(model.parameters(), state["train_copy"]):
                p.copy_(w)
        state["train_copy"] = None
        calls["swapped_back"] += 1


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters, batch,
                  loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
    model = current_param_container
    _swap_back(model, optimizer_state)
    optimizer_state["optimizer"].zero_grad(set_to_none=True)
    out, model_state = workload.model_fn(model, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True)
    d = workload.loss_fn(batch["targets"], out)
    (d["summed"] / d["n_valid_examples"]).backward()
    optimizer_state["optimizer"].step()
    with torch.no_grad():
        torch._foreach_lerp_(optimizer_state["ema"], [p.detach() for p in model.parameters()],
                             1 - hyperparameters.ema_decay)
    return optimizer_state, model, model_state


def prepare_for_eval(workload, current_param_container, current_params_types, model_state, hyperparameters,
                     loss_type, optimizer_state, eval_results, global_step, rng):
    calls["prepare_for_eval"] += 1
    model = current_param_container
    _swap_back(model, optimizer_state)
    with torch.no_grad():
        optimizer_state["train_copy"] = [p.detach().clone() for p in model.parameters()]
        for p, e in zip(model.parameters(), optimizer_state["ema"]):
            p.copy_(e)
    return optimizer_state, model, model_state


def get_batch_size(workload_name):
    raise ValueError(workload_name)
