"""The real workloads at an end-to-end test size: same classes, models, data path and metric; only the size preset is
shrunk to fit the small archives the tests generate (a few hundred images, a few thousand tokens)."""

from dataclasses import replace

from optbench.api import Budget, EvalPeriod

from optbench_workloads.cifar10 import Cifar10
from optbench_workloads.lm import LanguageModel, c4 as _c4, wikitext as _wikitext


def _e2e_lm(base: LanguageModel) -> LanguageModel:
    tiny = base.sizes["tiny"]
    # any tokenizer: the generated corpus cannot fill 8192 BPE ids; few validation windows: it is short
    options = {**tiny.options, "tokenizer": None, "vocab": None, "val_sequences": 4, "min_train_tokens": None,
               "seq_len": 32}
    size = replace(tiny, name="e2e", options=options, target=100.0, batch_size=4, step_hint=20,
                   budget=Budget(max_steps=20), eval_every=EvalPeriod(steps=10))
    return LanguageModel(name=base.name, dataset=base.dataset, sizes={"e2e": size}, description=base.description)


def _e2e_cifar() -> Cifar10:
    work = Cifar10()
    tiny = work.sizes["tiny"]
    options = {**tiny.options, "train_examples": 200, "val_examples": 50, "widths": (4, 8, 8, 8)}
    size = replace(tiny, name="e2e", options=options, target=0.0, batch_size=16, step_hint=10,
                   budget=Budget(max_steps=10), eval_every=EvalPeriod(steps=5))
    work.sizes = {"e2e": size}
    work.default_size = "e2e"
    return work


wikitext = _e2e_lm(_wikitext)
c4 = _e2e_lm(_c4)
cifar10 = _e2e_cifar()
for _w in (wikitext, c4):
    _w.default_size = "e2e"
