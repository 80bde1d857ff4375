"""A tiny-LM GRPO testbed: local tokenizer, tiny model, verifiable tasks, warm start.

Everything builds offline and deterministically by seed::

    from metactl.integrations.lab.testbed import make_tokenizer, make_model, make_task

    tok = make_tokenizer()                        # character-level, no download
    model = make_model(tok, seed=0)               # tiny Qwen2, same seed -> same weights
    task = make_task("addition", difficulty=2, seed=0)
    task.train, task.eval                         # datasets with "prompt", "answer"
    task.reward_func                              # TRL reward function

    model, tok, meta = warm_start(WarmStartConfig(task="addition", difficulty=2))
"""

from metactl.errors import require

for _module in ("torch", "transformers", "datasets", "tokenizers"):
    require(_module, "lab")

from .model import SIZES, make_model  # noqa: E402
from .tasks import TASKS, Task, countdown_reward, exact_match_reward, make_task  # noqa: E402
from .tokenizer import make_tokenizer  # noqa: E402
from .warmstart import (  # noqa: E402
    WarmStartConfig,
    cache_dir,
    evaluate,
    greedy_answers,
    warm_start,
)

__all__ = [
    "SIZES",
    "TASKS",
    "Task",
    "WarmStartConfig",
    "cache_dir",
    "countdown_reward",
    "evaluate",
    "exact_match_reward",
    "greedy_answers",
    "make_model",
    "make_task",
    "make_tokenizer",
    "warm_start",
]
