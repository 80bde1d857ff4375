"""Worker for the 2-process test: ``torchrun --nproc_per_node 2 dist_worker.py OUT_DIR``.

Each rank trains 2 generation rounds (one prompt group of 4, split over the ranks) of MetaGRPOTrainer on CPU (gloo) with a controller seeded
differently on each rank (so ranks agree only through the trainer's broadcast), and writes
``rank{N}.json`` with the temperatures it generated at and its final controller state.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch.distributed
from conftest import digit_reward, make_config, make_dataset

import metactl as mc
from metactl.integrations.lab.testbed import make_model, make_tokenizer
from metactl.integrations.trl import MetaGRPOTrainer


def main(out: str) -> None:
    tokenizer = make_tokenizer()
    args = make_config(
        out,
        max_steps=4,
        steps_per_generation=2,
        gradient_accumulation_steps=1,
        per_device_train_batch_size=1,  # 2 rows per rank and round: a group spans both ranks
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
    main(sys.argv[1])
