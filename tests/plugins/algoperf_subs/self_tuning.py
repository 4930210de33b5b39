"""A self-tuning submission: no hyperparameters (it gets None) and no search space; AdamW with its own settings,
cosine over the step hint (optbench tests). ``seen`` records what it was handed."""

import math

import torch
from algoperf import spec

seen = {}


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    seen["hyperparameters"] = hyperparameters
    optimizer = torch.optim.AdamW(model_params.parameters(), lr=1e-2, weight_decay=0.0)
    hint = workload.step_hint
    cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * min(1.0, e / hint))))
    return {"optimizer": optimizer, "scheduler": cosine}


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters, batch,
                  loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
    seen["global_step"], seen["train_state"], seen["eval_results"] = global_step, train_state, eval_results
    seen.setdefault("rngs", []).append(tuple(int(x) for x in rng))
    model = current_param_container
    optimizer_state["optimizer"].zero_grad(set_to_none=True)
    out, model_state = workload.model_fn(model, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True)
    d = workload.loss_fn(batch["targets"], out)
    (d["summed"] / d["n_valid_examples"]).backward()
    optimizer_state["optimizer"].step()
    optimizer_state["scheduler"].step()
    return optimizer_state, model, model_state


def get_batch_size(workload_name):
    raise ValueError(workload_name)
