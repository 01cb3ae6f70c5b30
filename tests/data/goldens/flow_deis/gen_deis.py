"""DEISMultistepScheduler in flow mode (use_flow_sigmas, flow_prediction), in the format of ../flow.

    python gen_deis.py        (diffusers 0.42.1, torch, numpy; the same venv as ../flow/gen_flow.py)

Runs ../flow/gen_flow.py's case runner with DEISMultistepScheduler added to its classes; the independent
reference check (ref_flow.py) does not cover DEIS, so reference_check is null here.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "flow"))

import gen_flow  # noqa: E402
from diffusers import DEISMultistepScheduler  # noqa: E402

gen_flow.CLASSES["DEISMultistepScheduler"] = DEISMultistepScheduler
gen_flow.ref_flow = None

FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
SPEC = [
    {"name": "deisf_1_shift3_8", "class": "DEISMultistepScheduler", "num_inference_steps": 8,
     "config": {**FLOW, "flow_shift": 3.0, "solver_order": 1}, "record_steps": True,
     "description": "DEIS order 1 (DDIM) on flow sigmas, shift 3; the last sigma repeats, so the last step is a no-op"},
    {"name": "deisf_2_shift1_10", "class": "DEISMultistepScheduler", "num_inference_steps": 10,
     "config": {**FLOW, "flow_shift": 1.0, "solver_order": 2}, "record_steps": True,
     "description": "DEIS order 2 on unshifted flow sigmas"},
    {"name": "deisf_3_shift3_12", "class": "DEISMultistepScheduler", "num_inference_steps": 12,
     "config": {**FLOW, "flow_shift": 3.0, "solver_order": 3}, "record_steps": True,
     "description": "DEIS order 3 (the default), lower order at the end below 15 steps"},
    {"name": "deisf_3_shift3_20", "class": "DEISMultistepScheduler", "num_inference_steps": 20,
     "config": {**FLOW, "flow_shift": 3.0, "solver_order": 3},
     "description": "DEIS order 3 at 20 steps (no lower-order tail)"},
    {"name": "deisf_3_dynamic_mu1.15_10", "class": "DEISMultistepScheduler", "num_inference_steps": 10,
     "config": {**FLOW, "flow_shift": 1.0, "solver_order": 3, "use_dynamic_shifting": True},
     "set_timesteps_kwargs": {"mu": 1.15},
     "description": "set_timesteps(mu=1.15) sets flow_shift = exp(mu)"},
]

if __name__ == "__main__":
    gen_flow.torch.set_num_threads(1)
    gen_flow.write_cases(SPEC, HERE, "", "gen_deis.py")
