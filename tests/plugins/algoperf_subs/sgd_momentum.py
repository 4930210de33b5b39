"""SGD with heavy-ball momentum in AlgoPerf's PyTorch format, linear warmup then constant (optbench tests)."""

from typing import Any, Dict, Optional

import torch
from algoperf import spec


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    optimizer = torch.optim.SGD(model_params.parameters(), lr=hyperparameters.learning_rate,
                                momentum=hyperparameters.momentum, nesterov=False)
    warmup = max(1, int(0.05 * workload.step_hint))
    ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: min(1.0, (e + 1) / warmup))
    return {"optimizer": optimizer, "scheduler": ramp}


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters, batch,
                  loss_type, optimizer_state, eval_results, global_step, rng,
                  train_state: Optional[Dict[str, Any]] = None):
    model = current_param_container
    optimizer_state["optimizer"].zero_grad(set_to_none=True)
    out, model_state = workload.model_fn(model, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True)
    d = workload.loss_fn(batch["targets"], out)
    (d["summed"] / d["n_valid_examples"]).backward()
    optimizer_state["optimizer"].step()
    optimizer_state["scheduler"].step()
    return optimizer_state, model, model_state


def get_batch_size(workload_name):
    return {"cifar": 256}[workload_name]  # a KeyError elsewhere: the harness falls back to the workload's batch
