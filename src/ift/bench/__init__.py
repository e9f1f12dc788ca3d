"""Step-time and peak-memory benchmark of SFT, IFT, DPO and ORPO, side by side (``python -m ift.bench``, ``make bench``).

Issue #7: IFT costs one extra forward pass without gradient, so its floor is about 4/3 of SFT's compute per step; the
targets are IFT/SFT step time <= 1.40 and peak memory <= 1.10 at the ``small`` shape. Results go to
``outputs/bench/results.json`` (one entry per shape) and the committed record is ``benchmarks/RESULTS.md``.

What is measured
----------------
* Model: a random-initialised ``MistralForCausalLM`` of the chosen shape (conf/bench.yaml ``shapes``), built by the
  start-point builder (:func:`ift.train.start_points.build_tiny_model`) and saved once; every method loads its own
  copy of those same initial weights (DPO's reference model too, as in training).
* Data: ``batch_size`` random-token sequences of exactly ``seq_len`` tokens, ``<s> prompt.. response.. </s>`` with
  ``prompt_fraction`` of them prompt. SFT and IFT train on prompt + chosen; DPO and ORPO on (chosen, rejected) pairs
  with the same prompt, i.e. twice the sequences per step. The text is written so that no trainer adds a BOS/EOS of
  its own, and each trainer's collated batch is checked to hold exactly the benchmark's token ids.
* Trainers: the real ones, built by :func:`ift.train.trainers.build_trainer` from ``conf/method/<method>.yaml`` and
  :func:`ift.train.arguments.training_kwargs` -- TRL's SFTTrainer, our IFTTrainer (its own ``compute_loss``), TRL's
  DPOTrainer, our ORPO trainer (TRL's with the response-only NLL term). No loss is re-implemented here.
* A **step** is one optimiser step with gradient accumulation 1, as Trainer's inner loop runs it:
  ``Trainer._get_num_items_in_batch`` -> ``trainer.training_step`` (``compute_loss``: every forward pass of the method,
  i.e. IFT's no-grad pass 1 and its pass 2, DPO's reference forward unless precomputed; then the backward) ->
  gradient clipping (``max_grad_norm``) -> ``optimizer.step()`` -> ``lr_scheduler.step()`` ->
  ``model.zero_grad(set_to_none=True)``. Not in a step: data loading and collation (each method's batch is collated
  once and reused), logging, checkpointing, and ``dpo_precomputed``'s reference pass (done once when its trainer
  is built, as TRL does before training).
* Timing: ``warmup`` untimed steps per method (the first, at identical initial weights, records the loss and the
  pre-clipping gradient norm: the IFT variants must agree), then ``rounds`` rounds, each timing one step of every
  method in turn (the order rotates by one every round), ``time.perf_counter`` around the step (CUDA synchronised
  before and after). Reported: the median step time, tokens/s (non-padding tokens of the batch / median), the ratio
  of medians to SFT, and the median of the per-round ratios ("paired"; robust to load drift on a shared machine).
* Memory: ``peak = resident + step peak``. Resident = bytes of the unique storages of the policy's parameters and
  buffers, the reference model's (DPO) and the optimizer state, measured between steps (gradients are freed by
  ``zero_grad``). Step peak = the highest tensor memory allocated during one extra step above its level at the step's
  start: on CUDA ``torch.cuda.max_memory_allocated()`` after a peak reset, minus ``memory_allocated()`` at the start;
  on CPU the running sum, in time order, of every allocation and free of PyTorch's CPU allocator as recorded by
  ``torch.profiler`` with ``profile_memory=True`` (a separate, untimed step). This counts tensor bytes as allocated
  (an ``empty`` buffer counts in full even if its pages are never touched); it does not count Python objects or
  memory that libraries allocate outside PyTorch's allocator. RSS is not used: its high-water mark cannot be reset
  between methods of one process, and glibc keeps freed pages.
* GPU (shape ``gpu``, only when ``torch.cuda.is_available()``): bf16 weights; also model TFLOP/s and MFU from TRL's
  ``compute_flops_per_token`` (6 x params per token plus attention, the standard training-FLOPs count; IFT's extra
  no-grad forward is not counted as model FLOPs, so its MFU is lower by construction).

Methods (conf/bench.yaml ``methods``): ``sft``, ``ift``, ``ift_plain`` (``memory_efficient=false``: full-vocabulary
logits in pass 1 and a plain log-softmax over full logits in pass 2, the "before" of IFT's optimisations),
``ift_plain_pass1`` / ``ift_plain_pass2`` (only one pass plain: each optimisation alone, through the trainer option
``memory_efficient: pass2 | pass1``), ``dpo``,
``dpo_precomputed``, ``orpo``.

Modules, in the order a run uses them: ``settings`` (VARIANTS, conf/bench.yaml), ``workload`` (machine, tokenizer,
rows, initial model), ``step`` (each method's trainer and step), ``measure`` (time, memory, FLOPs), ``results``
(ratios, results.json, the markdown table) and ``runner`` (the interleaved rounds).
"""

from ift.bench.results import markdown_table, report, write_results
from ift.bench.runner import run_benchmark
from ift.bench.settings import VARIANTS

__all__ = ["VARIANTS", "markdown_table", "report", "run_benchmark", "write_results"]
