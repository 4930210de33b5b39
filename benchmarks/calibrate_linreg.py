import torch, time, sys
from optbench_workloads.linreg import workload
from optbench.api import TrialInfo
from optbench.registry import load_submission
torch.set_num_threads(1); TGT=float(__import__('os').environ.get('TGT','0.05'))
size = workload.sizes['tiny']
task = workload.setup(size, device=torch.device('cpu'))
for name, hp in [(n, eval(h)) for n, h in zip(sys.argv[1::2], sys.argv[2::2])]:
    sub = load_submission(name).obj
    hps = {**sub.defaults, **hp}
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = task.init_model(g)
    info = TrialInfo(workload='linreg', size='tiny', step_hint=size.step_hint, max_steps=3000, batch_size=32, device='cpu', seed=0)
    opt = sub.create(model, hps, info)
    t0 = time.time(); hit=None
    for s in range(1, 3001):
        b = task.next_batch(32, g); opt.zero_grad(); l = task.loss(model, b); l.backward(); opt.step()
        if s % 50 == 0:
            e = task.evaluate(model)['excess_risk']
            if hit is None and e <= TGT: hit = s
    print(name, hp, 'final', round(e,4), 'hit', hit, f'{time.time()-t0:.1f}s')
