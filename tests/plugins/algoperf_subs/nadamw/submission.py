"""NAdamW in AlgoPerf's PyTorch submission format (written for optbench's tests; runs under AlgoPerf as well).

The update and the schedule are those of optbench's built-in ``nadamw`` (submissions/adamw.py, optbench/schedules.py):
linear warmup over ``warmup_factor * step_hint`` steps, then cosine decay to ``decay_floor`` times the peak at
``step_hint``; so the two reach a target in the same steps with the same hyperparameters.
"""

import math
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from absl import logging
from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup

USE_PYTORCH_DDP = pytorch_setup()[0]


class NAdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay and Nesterov's look-ahead of the first moment (Dozat 2016)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, st in zip(params, states):
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
            t = int(states[0]["step"])
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            exp_avg = [st["exp_avg"] for st in states]
            exp_avg_sq = [st["exp_avg_sq"] for st in states]
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - beta2)
            lookahead = torch._foreach_lerp(grads, exp_avg, beta1)
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, lookahead, denom, -lr / (1 - beta1**t))


def warmup_cosine(step_hint: int, warmup_factor: float, floor: float):
    """The learning-rate multiplier after ``epoch`` scheduler steps (the update numbered epoch + 1)."""
    warmup = int(round(warmup_factor * step_hint))

    def factor(epoch: int) -> float:
        t = epoch + 1
        if t <= warmup:
            return t / max(1, warmup)
        s = min(1.0, (t - warmup) / max(1, step_hint - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * s))

    return factor


def init_optimizer_state(workload: spec.Workload, model_params: spec.ParameterContainer,
                         model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters,
                         rng: spec.RandomState) -> spec.OptimizerState:
    del model_state, rng
    optimizer = NAdamW(model_params.parameters(), lr=hyperparameters.learning_rate,
                       betas=(1.0 - hyperparameters.one_minus_beta1, hyperparameters.beta2), eps=1e-8,
                       weight_decay=hyperparameters.weight_decay)
    factor = warmup_cosine(workload.step_hint, hyperparameters.warmup_factor, hyperparameters.decay_floor)
    return {"optimizer": optimizer, "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor)}


def update_params(workload: spec.Workload, current_param_container: spec.ParameterContainer,
                  current_params_types: spec.ParameterTypeTree, model_state: spec.ModelAuxiliaryState,
                  hyperparameters: spec.Hyperparameters, batch: Dict[str, spec.Tensor], loss_type: spec.LossType,
                  optimizer_state: spec.OptimizerState, eval_results: List[Tuple[int, float]], global_step: int,
                  rng: spec.RandomState, train_state: Optional[Dict[str, Any]] = None) -> spec.UpdateReturn:
    del current_params_types, loss_type, eval_results, train_state
    model = current_param_container
    model.train()
    optimizer_state["optimizer"].zero_grad()
    logits, new_model_state = workload.model_fn(
        params=model, augmented_and_preprocessed_input_batch=batch, model_state=model_state,
        mode=spec.ForwardPassMode.TRAIN, rng=rng, update_batch_norm=True)
    losses = workload.loss_fn(label_batch=batch["targets"], logits_batch=logits, mask_batch=batch.get("weights"))
    loss = losses["summed"] / losses["n_valid_examples"]
    loss.backward()
    optimizer_state["optimizer"].step()
    optimizer_state["scheduler"].step()
    if global_step == 0:
        logging.info("first step of %s", type(optimizer_state["optimizer"]).__name__)
    return optimizer_state, current_param_container, new_model_state


def get_batch_size(workload_name: str) -> int:
    if workload_name == "cifar":
        return 128
    raise ValueError(f"Unsupported workload name: {workload_name}.")


def data_selection(workload: spec.Workload, input_queue: Iterator[Dict[str, spec.Tensor]],
                   optimizer_state: spec.OptimizerState, current_param_container: spec.ParameterContainer,
                   model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters, global_step: int,
                   rng: spec.RandomState) -> Dict[str, spec.Tensor]:
    return next(input_queue)
