"""Sharpness-Aware Minimization (Foret et al. 2021) over SGD in AlgoPerf's PyTorch format: two forward/backward
passes per step, the second at the weights moved rho along the normalised gradient (optbench tests)."""

import torch
from algoperf import spec


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {"optimizer": torch.optim.SGD(model_params.parameters(), lr=hyperparameters.learning_rate, momentum=0.9)}


def _grad(workload, model, batch, model_state, rng):
    out, model_state = workload.model_fn(model, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True)
    d = workload.loss_fn(batch["targets"], out)
    (d["summed"] / d["n_valid_examples"]).backward()
    return model_state


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters, batch,
                  loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
    model = current_param_container
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer_state["optimizer"].zero_grad(set_to_none=True)
    model_state = _grad(workload, model, batch, model_state, rng)  # pass 1: the gradient at w
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = hyperparameters.rho / (norm + 1e-12)
        moves = [p.grad * scale for p in params]
        torch._foreach_add_(params, moves)
    optimizer_state["optimizer"].zero_grad(set_to_none=True)
    model_state = _grad(workload, model, batch, model_state, rng)  # pass 2: the gradient at w + e(w)
    with torch.no_grad():
        torch._foreach_sub_(params, moves)
    optimizer_state["optimizer"].step()
    return optimizer_state, model, model_state


def get_batch_size(workload_name):
    raise ValueError(workload_name)
