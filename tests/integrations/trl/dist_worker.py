"""Worker for the 2-process tests: ``torchrun --nproc_per_node 2 dist_worker.py OUT_DIR [MODE]``.

MODE ``ddp`` (default): each rank trains 2 generation rounds (one prompt group of 4, split over the ranks)
of MetaGRPOTrainer on CPU (gloo) with a controller seeded
differently on each rank (so ranks agree only through the trainer's broadcast), and writes
``rank{N}.json`` with the temperatures it generated at and its final controller state.

MODE ``fsdp2``: as ``ddp``, with the model sharded by FSDP2 (``fully_shard``, gloo on CPU)
through :func:`fsdp_on_cpu`, a test-only shim: accelerate takes its FSDP path only on GPUs.

MODE ``no-use-cpu``: each rank builds the trainer without ``use_cpu=True`` (accelerate then runs
each process alone on a CPU-only machine) and writes the error it raised, or none.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch.distributed
from conftest import digit_reward, make_config, make_dataset

import metactl as mc
from metactl.integrations.lab.testbed import make_model, make_tokenizer
from metactl.integrations.trl import MetaGRPOTrainer


def no_use_cpu(out: str) -> None:
    tokenizer = make_tokenizer()
    args = make_config(out, use_cpu=False)
    seen = args.world_size  # what accelerate made of the launch
    error = None
    try:
        MetaGRPOTrainer(
            model=make_model(tokenizer, seed=0),
            reward_funcs=digit_reward,
            args=args,
            train_dataset=make_dataset(),
            processing_class=tokenizer,
        )
    except ValueError as exc:
        error = str(exc)
    Path(out, f"rank{os.environ['RANK']}.json").write_text(
        json.dumps({"seen": seen, "error": error})
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def fsdp_on_cpu() -> None:
    """Let accelerate take its FSDP path on MULTI_CPU (test-only: it wraps with DDP there).

    accelerate's ``AcceleratorState`` keeps an FSDP plugin only for GPU-like distributed types;
    torch's FSDP2 ``fully_shard`` itself runs on CPU with gloo.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            # as accelerate does for GPUs: later AcceleratorState() calls copy it from here
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init


def main(out: str, fsdp: bool = False) -> None:
    tokenizer = make_tokenizer()
    sharding: dict[str, Any] = {}
    if fsdp:
        fsdp_on_cpu()
        sharding = {"fsdp": "full_shard", "fsdp_config": {"fsdp_version": 2}}
    args = make_config(
        out,
        max_steps=4,
        steps_per_generation=2,
        gradient_accumulation_steps=1,
        per_device_train_batch_size=1,  # 2 rows per rank and round: a group spans both ranks
        **sharding,
    )
    rows: list[list[tuple[str, int, float]]] = []  # per round: this rank's (prompt, length, reward)

    def recording_reward(prompts, completions, completion_ids, **kwargs):  # type: ignore[no-untyped-def]
        rewards = digit_reward(prompts, completions)
        rows.append(
            [(p, len(c), r) for p, c, r in zip(prompts, completion_ids, rewards, strict=True)]
        )
        return rewards

    trainer = MetaGRPOTrainer(
        model=make_model(tokenizer, seed=0),
        reward_funcs=recording_reward,
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        controller=mc.TAMPO(seed=1000 + int(os.environ["RANK"])),  # explicit: not args.seed
    )
    temperatures: list[float] = []
    generate = trainer.model.generate

    def spy(*a, **kw):
        temperatures.append(kw["generation_config"].temperature)
        return generate(*a, **kw)

    trainer.model.generate = spy
    feedbacks: list[
        list[list[float]]
    ] = []  # per round: the Counterfactual's groups, rewards, lengths
    update = trainer.controller.update

    def recording_update(fb):  # type: ignore[no-untyped-def]
        feedbacks.append([fb.groups.tolist(), fb.rewards.tolist(), fb.lengths.tolist()])
        return update(fb)

    trainer.controller.update = recording_update
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "model_class": type(trainer.model_wrapped).__name__,
        "temperatures": temperatures,
        "state": trainer.controller.state_dict(),
        "rows": rows,
        "feedbacks": feedbacks,
        "num_generations": trainer.num_generations,
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    # Leave without running destructors. Tearing gloo down at exit is racy in torch: left to the
    # interpreter it can abort ("terminate called without an active exception"); destroyed
    # explicitly, the DDP reducer's destructor can join a gloo thread that waits for the GIL
    # (a deadlock seen in CI). Both ranks have written their results; the barrier makes sure.
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mode = sys.argv[2] if len(sys.argv) > 2 else "ddp"
    if mode == "fsdp2":
        main(sys.argv[1], fsdp=True)
    else:
        {"ddp": main, "no-use-cpu": no_use_cpu}[mode](sys.argv[1])
