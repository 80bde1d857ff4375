"""A stand-in for TRL's ``VLLMGeneration`` (vLLM needs a GPU), shaped like the real interface.

What GRPOTrainer uses of ``trl.generation.vllm_generation.VLLMGeneration`` on every tested
release (1.0 to 1.16): ``sync_weights()`` when the training step changed, and
``generate(prompts, images, num_generations, profiler)`` returning ``(prompt_ids,
completion_ids, logprobs, logprob_token_ids)``, where ``logprobs[i][t]`` is a list whose first
entry is the sampled token's log-probability (vLLM's processed log-probs: after temperature).
Like the real one, :meth:`StandInVLLMGeneration.generate` reads ``self.temperature`` (and the
other sampling settings) at the top of every call, then hands them to its backend the way TRL
does: in colocate mode ``self.llm.generate(prompts, sampling_params=SamplingParams(...))`` on
every process's own prompts, in server mode ``self.vllm_client.generate(prompts=unique,
n=num_generations, temperature=..., ...)`` from the main process on the gathered unique prompts,
then broadcast and sliced per process.

The backend (:class:`StandInEngine`) is a copy of the policy whose weights ``sync_weights``
loads, as vLLM holds its own copy; it samples token by token at the temperature it is handed,
stops at EOS, and returns the sampled tokens' log-probabilities at that temperature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, gather_object


@dataclass
class SamplingParams:
    """The fields of ``vllm.SamplingParams`` that TRL sets and the stand-in engine uses."""

    n: int = 1
    temperature: float = 1.0
    max_tokens: int = 16
    logprobs: int | None = 0


@dataclass
class CompletionOutput:
    token_ids: list[int]
    logprobs: list[float]


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


class StandInEngine:
    """What ``vllm.LLM`` is to TRL in colocate mode: ``generate(prompts, sampling_params=...)``."""

    def __init__(self, policy: Any, eos_token_id: int, seed: int = 0) -> None:
        self.model = type(policy)(policy.config).eval()  # a plain copy, no patched forward
        self.model.load_state_dict(policy.state_dict())
        self.eos_token_id = eos_token_id
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def sample(self, prompt: list[int], temperature: float, max_tokens: int) -> CompletionOutput:
        ids, tokens, logps = list(prompt), [], []
        for _ in range(max_tokens):
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            logp = torch.log_softmax(logits / temperature, -1)
            token = int(torch.multinomial(logp.exp(), 1, generator=self.generator))
            ids.append(token)
            tokens.append(token)
            logps.append(float(logp[token]))
            if token == self.eos_token_id:
                break
        return CompletionOutput(tokens, logps)

    def generate(
        self, prompts: list[dict[str, Any]], sampling_params: SamplingParams, use_tqdm: bool = False
    ) -> list[RequestOutput]:
        p = sampling_params
        return [
            RequestOutput(
                row["prompt_token_ids"],
                [
                    self.sample(row["prompt_token_ids"], p.temperature, p.max_tokens)
                    for _ in range(p.n)
                ],
            )
            for row in prompts
        ]


class StandInClient:
    """What ``trl.generation.vllm_client.VLLMClient`` is in server mode (``generate`` only)."""

    def __init__(self, engine: StandInEngine) -> None:
        self.engine = engine

    def generate(
        self,
        prompts: list[list[int]],
        n: int = 1,
        temperature: float = 1.0,
        max_tokens: int = 16,
        logprobs: int | None = 0,
        **kwargs: Any,
    ) -> dict[str, Any]:
        outs = self.engine.generate(
            [{"prompt_token_ids": p} for p in prompts],
            SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens),
        )
        completions = [c for out in outs for c in out.outputs]
        return {
            "prompt_ids": prompts,
            "completion_ids": [c.token_ids for c in completions],
            "logprobs": [[[lp] for lp in c.logprobs] for c in completions],
        }


class StandInVLLMGeneration:
    """TRL's ``VLLMGeneration`` as GRPOTrainer uses it (see the module docstring).

    Args:
        trainer: the GRPOTrainer whose policy it copies and whose settings it takes.
        mode: ``"colocate"`` or ``"server"``.
    """

    def __init__(self, trainer: Any, mode: str) -> None:
        self.mode = mode
        self.model = trainer.model
        self.accelerator = trainer.accelerator
        self.temperature = trainer.temperature
        self.max_completion_length = trainer.max_completion_length
        engine = StandInEngine(trainer.model, trainer.processing_class.eos_token_id)
        if mode == "colocate":
            self.llm = engine
        else:
            self.vllm_client = StandInClient(engine)
        self.engine = engine
        self.temperatures_read: list[float] = []

    def sync_weights(self) -> None:
        self.engine.model.load_state_dict(self.model.state_dict())

    def sampling_temperature(self) -> float:
        """What the real ``generate`` does first: read the temperature set on the object."""
        return float(self.temperature)

    def generate(
        self,
        prompts: list[list[int]],
        images: Any,
        num_generations: int,
        profiler: Any = None,
    ) -> tuple[Any, Any, Any, Any]:
        temperature = self.sampling_temperature()
        self.temperatures_read.append(temperature)
        if self.mode == "server":
            all_prompts = gather_object(prompts)
            payload: Any = None
            if self.accelerator.is_main_process:
                out = self.vllm_client.generate(
                    prompts=all_prompts[::num_generations],
                    n=num_generations,
                    temperature=temperature,
                    max_tokens=self.max_completion_length,
                    logprobs=0,
                )
                payload = (out["prompt_ids"], out["completion_ids"], out["logprobs"])
            box = [payload]
            broadcast_object_list(box, from_process=0)
            prompt_ids, completion_ids, logprobs = box[0]
            prompt_ids = [ids for ids in prompt_ids for _ in range(num_generations)]
            rows = slice(
                self.accelerator.process_index * len(prompts),
                (self.accelerator.process_index + 1) * len(prompts),
            )
            return prompt_ids[rows], completion_ids[rows], logprobs[rows], None
        params = SamplingParams(
            n=1, temperature=temperature, max_tokens=self.max_completion_length, logprobs=0
        )
        outs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompts], sampling_params=params, use_tqdm=False
        )
        completions = [c for out in outs for c in out.outputs]
        return (
            [out.prompt_token_ids for out in outs],
            [c.token_ids for c in completions],
            [[[lp] for lp in c.logprobs] for c in completions],
            None,
        )


class StaleVLLMGeneration(StandInVLLMGeneration):
    """A negative control: generates at the temperature it was built with, ignoring the
    attribute (as a generation backend that captured its sampling settings would)."""

    def __init__(self, trainer: Any, mode: str) -> None:
        super().__init__(trainer, mode)
        self._built_with = float(self.temperature)

    def sampling_temperature(self) -> float:
        return self._built_with


def use_standin(trainer: Any, generation: StandInVLLMGeneration) -> None:
    """Make a trainer built without vLLM generate through ``generation``, as ``use_vllm=True``
    would have (GRPOTrainer's own vLLM branch, with the importance-sampling correction on, so
    that every round's old log-probs are computed and compared with the sampling ones)."""
    trainer.use_vllm = True
    trainer.vllm_mode = generation.mode
    trainer.vllm_generation = generation
    trainer.vllm_importance_sampling_correction = True
    trainer._last_loaded_step = -1
