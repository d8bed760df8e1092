"""Does the hf-vlm prefetch thread slow a host-bound generate? (a benchmark that prints, not a test)

    python bench/perf_prefetch.py                  # smoke Qwen2-VL on the CPU, batches of 128 images
    python bench/perf_prefetch.py --images 32 --steps 80

A decode step of a small model is host-bound: Python launching operators, holding the GIL. The backend
prepares the next batches (chat template, tokenizer, image processor) in a background thread while one
generates. Here one prepared image generates with forced new tokens (a step = the difference between a
long and a short generate, per extra token), alone and while a second thread prepares batches of
--images images in a loop, as the prefetch does, and while a spawned process does (catalog option
prefetch_process). Prints one JSON line: step_ms_alone, step_ms_beside_prepare (thread) and
step_ms_beside_process_prepare, and their ratios to the step alone. On a GPU the same question is
`python -m vlmcls.perf --prefetch 2,0,2p` (rows' overlap_slowdown and speedup_vs_prefetch_default).
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128, help="images per prepared batch (default 128)")
    p.add_argument("--steps", type=int, default=40, help="decode steps per measurement (default 40)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per condition; the median is printed")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)  # one core for generate, the other free for the preparing thread
    from vlmcls import perf
    from vlmcls.backends.hf_vlm import HFVLMBackend
    from vlmcls.perf_models import Models
    from vlmcls.settings import BackendSettings

    names = perf.imagenet_names()
    entry = perf._entry("smoke-qwen2-vl")
    settings = BackendSettings(device="cpu", batch_size=1, batch_auto=False, extra=dict(entry.options))
    model, processor, _ = Models("smoke-qwen2-vl", entry, names, "cpu").get(settings)
    queries = perf.make_queries(names, 20, "image-first", perf.synthetic_images(args.images, (500, 375)))
    backend = HFVLMBackend(model, processor, settings)
    inputs = dict(backend._prepare(queries[:1]).inputs)
    t0 = time.perf_counter()
    backend._prepare(queries)
    prepare_s = time.perf_counter() - t0

    def generate(tokens: int) -> float:
        with perf.forced_new_tokens(model, tokens), torch.inference_mode():
            start = time.perf_counter()
            model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
            return time.perf_counter() - start

    def step_ms() -> float:
        return statistics.median((generate(args.steps + 2) - generate(2)) / args.steps * 1000
                                 for _ in range(args.repeats))

    def step_ms_beside(prepare_one_batch) -> tuple[float, int]:
        """A step's time while another thread calls `prepare_one_batch` in a loop, and how many it did."""
        stop, done = threading.Event(), []

        def loop() -> None:
            while not stop.is_set():
                prepare_one_batch()
                done.append(1)

        worker = threading.Thread(target=loop, daemon=True)
        worker.start()
        time.sleep(0.2)
        try:
            return step_ms(), len(done)
        finally:
            stop.set()
            worker.join()

    generate(4)  # warm-up
    alone = step_ms()
    beside, prepared = step_ms_beside(lambda: backend._prepare(queries))

    # the same, with the batches prepared in a process of its own (catalog option prefetch_process): the
    # looping thread only waits
    from vlmcls.backends import prepare_process

    pool = prepare_process.start(prepare_process.worker_state(backend))
    pool.submit(prepare_process.prepare, queries).result()  # started and warm
    beside_process, in_process = step_ms_beside(lambda: pool.submit(prepare_process.prepare, queries).result())
    pool.shutdown()
    print(json.dumps(dict(images_per_batch=args.images, prepare_s=round(prepare_s, 3), step_ms_alone=round(alone, 3),
                          step_ms_beside_prepare=round(beside, 3), slowdown=round(beside / alone, 2),
                          batches_prepared_meanwhile=prepared,
                          step_ms_beside_process_prepare=round(beside_process, 3),
                          slowdown_process=round(beside_process / alone, 2),
                          batches_prepared_in_process_meanwhile=in_process, torch=torch.__version__)))


if __name__ == "__main__":
    main()
