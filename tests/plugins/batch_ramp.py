"""A submission that sets the batch size per step (Capability.BATCH_SCHEDULE), Seesaw-style: 16, then 32 from
step 51 on."""

import torch

from optbench.api import Capability, SubmissionSpec


class RampSGD(torch.optim.SGD):
    def batch_size(self, step: int) -> int:
        return 16 if step <= 50 else 32


ramp = SubmissionSpec(
    name="ramp", factory=lambda model, hp, info: RampSGD(model.parameters(), lr=hp["lr"], momentum=0.9),
    defaults={"lr": 0.01}, capabilities=frozenset({Capability.BATCH_SCHEDULE}),
)
