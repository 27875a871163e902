"""
bench.py: how fast does gpt.py train and generate on this machine?

  python bench.py                    # the full run: 10-15 minutes on 2 busy CPU cores, most of it bf16
  python bench.py --quick            # a tiny model and short timings, about a minute: does the bench work here?
  python bench.py --cases=peak-bf16,train-medium-fp32,train-medium-bf16 --rounds=5

Results go to --out (default out/bench.json); README.md's performance section explains the fields.

A case is one measurement, named kind-model-dtype[-option]:
  peak-fp32                 the device's best matrix-multiply throughput in float32: the MFU denominator
  train-medium-bf16         train.py's training step (forward, backward, clipping, AdamW) under bf16 autocast
  train-small-fp32-compile  the same after torch.compile; compilation time is reported on its own
  train-default-auto        train.py's --dtype=auto: its own measurement and choice, then its steps
  gen-medium-fp32-cache     greedy generation with the KV cache; -nocache recomputes the whole context
  gen-medium-int8-cache     the same with gpt.quantize_int8 (CPU inference in int8)
Models are the MODELS below; dtypes fp32, bf16, fp16, auto (train only) and int8 (gen only).
--int8_loss=CKPT,... adds, for each train.py checkpoint, its whole-validation loss in float32 and in int8.

Each case runs in a fresh Python process (--isolate), so its peak memory is its own. The cases take
turns, round after round, so a burst of load from other programs hits them all alike: a figure is
the median over rounds, and a speed-up (bf16 over fp32, cache over no cache) is the median of the
speed-ups measured within each round.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from data.prepare import prepare
from gpt import GPT, GPTConfig, load_model, pick_device, quantize_int8
from train import TrainConfig, train_batches, whole_split_batches
from trainer import (ConfigError, Training, autocast, build_optimizers, check_range, choose_precision, cli,
                     evaluate, parse_config, train_step)


@dataclass
class BenchConfig:
    """Measure training and generation speed of gpt.py models on this machine."""

    cases: str = "default"  # comma-separated case names, or "default"
    quick: bool = False  # the tiny cases (unless --cases names others), one round, short timings
    rounds: int = 2  # every case runs once per round; figures are medians over rounds
    seconds: float = 3.0  # timed seconds per case and round; at least one step or generation always runs
    gen_tokens: int = 500  # new tokens per generation case
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    threads: int = 0  # torch's intra-op threads; 0 keeps torch's default (one per core)
    isolate: bool = True  # one fresh process per case, so its peak memory is its own
    out: str = "out/bench.json"
    int8_loss: str = ""  # comma-separated train.py checkpoints: whole-validation loss in float32 and in int8
    case: str = ""  # run only this case, in this process, and print its result as JSON (how --isolate works)

    def __post_init__(self):
        for key, interval in {"rounds": "[1, inf)", "seconds": "(0, inf)", "gen_tokens": "[1, inf)",
                              "threads": "[0, inf)"}.items():
            check_range(key, getattr(self, key), interval)


# (n_layer, n_head, n_embd, block_size, batch_size, rope)
MODELS = {
    "tiny": (2, 2, 32, 32, 4, False),  # for --quick and the tests
    "small": (4, 4, 128, 64, 12, False),  # nanoGPT's recipe for a laptop CPU
    "medium": (6, 6, 384, 256, 16, False),  # nanoGPT's shakespeare_char model, with a smaller batch
    "default": tuple(getattr(TrainConfig, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size",
                                                        "rope")),
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "auto", "int8": "int8"}  # train.py's names

DEFAULT_CASES = ("peak-fp32", "peak-bf16",
                 "train-small-fp32", "train-small-bf16", "train-small-fp32-compile",
                 "train-medium-fp32", "train-medium-bf16", "train-medium-fp32-compile",
                 "train-default-fp32", "train-default-bf16", "train-default-auto",
                 "gen-medium-fp32-cache", "gen-medium-fp32-nocache")
QUICK_CASES = ("peak-fp32", "peak-bf16", "train-tiny-fp32", "train-tiny-bf16", "train-tiny-auto",
               "gen-tiny-fp32-cache", "gen-tiny-fp32-nocache", "gen-tiny-int8-cache")

# The figures the project aims for (issue 6), checked when their cases ran.
BF16_SPEEDUP_TARGET, BF16_MFU_TARGET, KV_CACHE_SPEEDUP_TARGET = 2.2, 0.55, 5.0
AUTO_TOLERANCE = 0.95  # "auto never slower than the better dtype", within the noise between rounds


def parse_case(name):
    """'train-medium-bf16-compile' -> dict(kind, model, dtype, option). ConfigError if malformed."""
    parts = name.split("-")
    forms = "peak-DTYPE, train-MODEL-DTYPE[-compile] or gen-MODEL-DTYPE-cache|nocache (auto: train only; int8: gen only)"
    kind = parts[0]
    if kind == "peak" and len(parts) == 2 and parts[1] in DTYPES and parts[1] not in ("auto", "int8"):
        return {"kind": kind, "model": None, "dtype": parts[1], "option": None}
    options = {"train": (None, "compile"), "gen": ("cache", "nocache")}.get(kind)
    if options and len(parts) in (3, 4) and parts[1] in MODELS and parts[2] in DTYPES and \
            (kind, parts[2]) not in (("gen", "auto"), ("train", "int8")):
        option = parts[3] if len(parts) == 4 else None
        if option in options:
            return {"kind": kind, "model": parts[1], "dtype": parts[2], "option": option}
    raise ConfigError(f"--cases: cannot read case {name!r}: expected {forms}, with MODEL one of "
                      f"{', '.join(MODELS)} and DTYPE one of {', '.join(DTYPES)}")


# ----------------------------------------------------------------------------------------------------
# Measuring one case (in its own process unless --no-isolate)


def run_case(name, cfg):
    """Measure one case once; returns a dict of its figures."""
    case = parse_case(name)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    measure = {"peak": measure_peak, "train": measure_training, "gen": measure_generation}[case["kind"]]
    result = {"name": name, **case, **measure(case, cfg, device)}
    result["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def synchronize(device):
    """Wait for queued GPU work, so that a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seconds_per_call(fn, seconds, device):
    """Mean seconds per call of fn, calling it until `seconds` have passed (at least once)."""
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    synchronize(device)
    return (time.perf_counter() - start) / calls


def measure_peak(case, cfg, device):
    """Best GFLOP/s of square matrix products over a few sizes and the three layouts training uses
    (nn.Linear's forward multiplies by a transposed weight, its backward by plain and transposed
    factors): some CPUs' bf16 kernels run fast in only some of them."""
    dtype = getattr(torch, DTYPES[case["dtype"]])
    sizes = (256, 512, 1024, 2048, 4096, 8192)
    budget = cfg.seconds / len(sizes)  # per size
    best, best_shape = 0.0, None
    for n in sizes:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        for layout, first, second in (("a @ b", a, b), ("a @ b.T", a, b.t()), ("a.T @ b", a.t(), b)):
            start = time.perf_counter()
            torch.mm(first, second)  # warm-up: allocation and kernel choice
            synchronize(device)
            first_call = time.perf_counter() - start
            gflops = 2 * n**3 / seconds_per_call(lambda: torch.mm(first, second), budget / 3, device) / 1e9
            if gflops > best:
                best, best_shape = gflops, f"{n}x{n}: {layout}"
        if first_call > budget / 4:
            break  # larger sizes would not fit the time budget here
    return {"gflops": best, "best_shape": best_shape}


def bench_model(model_name, device):
    """A randomly initialised GPT of the named size, and its batch size."""
    n_layer, n_head, n_embd, block_size, batch_size, rope = MODELS[model_name]
    config = GPTConfig(block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, rope=rope)
    torch.manual_seed(0)
    return GPT(config).to(device), batch_size


def flops_per_token(model):
    """Training FLOPs per token, as nanoGPT estimates them (after the PaLM paper's appendix B):
    6 N for the forward and backward matrix products with the N non-embedding weights, plus
    12 n_layer n_embd block_size for attention's two (T x T) products, forward and backward."""
    c = model.config
    return 6 * model.num_params() + 12 * c.n_layer * c.n_embd * c.block_size


def measure_training(case, cfg, device):
    """ms per step of train.py's train_step on random tokens; compile and auto as train.py does them."""
    model, batch_size = bench_model(case["model"], device)
    c = model.config
    train_cfg = TrainConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size,
                            batch_size=batch_size, dtype=DTYPES[case["dtype"]], compile=case["option"] == "compile")
    tokens = np.random.default_rng(0).integers(0, c.vocab_size, size=100_000).astype(np.uint16)
    start = time.perf_counter()
    precision = choose_precision(device, train_cfg.dtype, train_cfg.compile, model)
    result = {"decide_s": time.perf_counter() - start, "decision": precision.reason} if case["dtype"] == "auto" else {}
    result["dtype_used"] = str(precision.autocast_dtype or torch.float32).removeprefix("torch.")
    t = Training(model, torch.compile(model) if precision.compile else model,
                 build_optimizers(model, train_cfg, device.type),
                 torch.amp.GradScaler(device.type, enabled=precision.grad_scaler), precision)
    batches = train_batches(tokens, replace(train_cfg, max_iters=10**9), device)(0, 0, 1)

    def one_step():
        train_step(t, batches, train_cfg, device)

    start = time.perf_counter()
    one_step()  # warm-up: allocation, kernel choice, and compilation when compiling
    synchronize(device)
    first = time.perf_counter() - start
    if precision.compile:
        result["compile_s"] = first
    if first > cfg.seconds and not precision.compile:  # so slow a step is timed once: its one-off costs are small beside it
        seconds = first
    else:
        seconds = seconds_per_call(one_step, cfg.seconds, device)
    tokens_per_step = batch_size * c.block_size
    result.update(ms_per_iter=1000 * seconds, tokens_per_iter=tokens_per_step, tokens_per_s=tokens_per_step / seconds,
                  gflops=flops_per_token(model) * tokens_per_step / seconds / 1e9, params=model.num_params())
    return result


def measure_generation(case, cfg, device):
    """Tokens per second of greedy generation of cfg.gen_tokens tokens after a one-token prompt."""
    model, _ = bench_model(case["model"], device)
    model.eval()
    if case["dtype"] == "int8":
        quantize_int8(model)
    dtype = None if case["dtype"] in ("fp32", "int8") else getattr(torch, DTYPES[case["dtype"]])
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    use_cache = case["option"] == "cache"
    with autocast(device.type, dtype):
        model.generate(prompt, 8, temperature=0, use_cache=use_cache)  # warm-up
        start = time.perf_counter()
        model.generate(prompt, cfg.gen_tokens, temperature=0, use_cache=use_cache)
        synchronize(device)
        seconds = time.perf_counter() - start
    return {"tokens": cfg.gen_tokens, "block_size": model.config.block_size, "tokens_per_s": cfg.gen_tokens / seconds,
            "ms_per_token": 1000 * seconds / cfg.gen_tokens}


def int8_loss_change(path, threads=0):
    """The whole validation split's mean loss under a train.py checkpoint, in float32 and then in int8, on the
    CPU, with the seconds each took: what int8 costs in quality, on the text the model was trained for."""
    if threads:
        torch.set_num_threads(threads)
    model, _, ckpt = load_model(path, "cpu")
    if "train_config" not in ckpt:
        raise ConfigError(f"--int8_loss: {path} was not written by train.py, so its validation data is unknown")
    cfg = parse_config(TrainConfig, [], base=ckpt["train_config"], base_source=f"{path}'s train_config")
    data = prepare(cfg.data, cfg.tokenizer, cfg.bpe_vocab_size, cfg.block_size, cache_root=cfg.data_dir)
    float32, cpu = choose_precision(torch.device("cpu"), "float32", False, model), torch.device("cpu")
    result = {"checkpoint": str(path), "n_layer": model.config.n_layer, "n_embd": model.config.n_embd,
              "val_tokens": len(data.val)}
    for name in ("fp32", "int8"):
        if name == "int8":
            quantize_int8(model)
        start = time.perf_counter()
        result[f"val_loss_{name}"] = evaluate(model, whole_split_batches(data.val, cfg.block_size, cfg.batch_size, cpu),
                                             float32, cpu)
        result[f"seconds_{name}"] = time.perf_counter() - start
    result["change"] = result["val_loss_int8"] - result["val_loss_fp32"]
    return result


def peak_rss_mb():
    """This process's peak resident memory in MiB. Linux's VmHWM belongs to this program alone;
    ru_maxrss can include the parent's memory from before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # not on Windows; macOS reports bytes, Linux KiB

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ----------------------------------------------------------------------------------------------------
# Running all cases, round after round, and summing up


def run_isolated(name, cfg):
    """run_case in a fresh Python process; failures come back as {"name", "error"}."""
    flags = [f"--case={name}", f"--device={cfg.device}", f"--threads={cfg.threads}", f"--seconds={cfg.seconds}",
             f"--gen_tokens={cfg.gen_tokens}"]
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *flags], capture_output=True, text=True,
                              timeout=480, cwd=Path(__file__).resolve().parent)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": "timed out after 480 s"}
    if done.returncode != 0:
        return {"name": name, "error": (done.stderr.strip().splitlines() or ["exit code %d" % done.returncode])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_here(name, cfg):
    try:
        return run_case(name, cfg)
    except Exception as e:  # one failing case (say, torch.compile without a C++ compiler) must not lose the rest
        return {"name": name, "error": f"{type(e).__name__}: {e}".splitlines()[0]}


TIMINGS = ("gflops", "ms_per_iter", "tokens_per_s", "ms_per_token", "decide_s")  # vary by round: take medians


def summarize(rounds, peaks):
    """One case's rounds -> its medians (and MFU against the measured peak of its dtype)."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return {"error": rounds[-1]["error"]}
    summary = {k: v for k, v in ok[0].items() if k != "name"}  # what every round shares: shape, dtype...
    summary.update({k: statistics.median(r[k] for r in ok) for k in TIMINGS if k in ok[0]})
    summary["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    timing = next(k for k in ("ms_per_iter", "ms_per_token", "gflops") if k in ok[0])
    summary["per_round"] = {timing: [r[timing] for r in ok]}  # the spread shows how noisy the machine was
    summary["rounds"] = len(ok)
    if "compile_s" in ok[0]:  # the first round compiles from scratch, later ones find the compiled code cached
        summary["compile_s"] = ok[0]["compile_s"]
        summary["compile_s_cached"] = statistics.median(r["compile_s"] for r in ok[1:]) if len(ok) > 1 else None
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(summary.get("dtype_used"))
    if "gflops" in summary and summary["kind"] == "train" and dtype in peaks:
        summary["mfu"] = summary["gflops"] / peaks[dtype]
    return summary


def speedup(results, fast, slow, key="ms_per_iter"):
    """Median over rounds of how many times faster case `fast` ran than case `slow`."""
    pairs = [(f, s) for f, s in zip(results.get(fast, []), results.get(slow, [])) if "error" not in f and "error" not in s]
    return statistics.median(s[key] / f[key] for f, s in pairs) if pairs else None


def speedups(results):
    """The comparisons that choose defaults: bf16 and compile against fp32, auto against the better
    dtype, the KV cache against recomputation. Pairs are taken within a round."""
    out = {}
    for model in MODELS:
        fp32 = f"train-{model}-fp32"
        for other, label in ((f"train-{model}-bf16", "bf16 over fp32"), (f"{fp32}-compile", "compile over eager")):
            value = speedup(results, other, fp32)
            if value is not None:
                out[f"train-{model} {label}"] = value
        auto, bf16 = results.get(f"train-{model}-auto", []), results.get(f"train-{model}-bf16", [])
        ratios = [min(f["ms_per_iter"], b["ms_per_iter"]) / a["ms_per_iter"]
                  for a, f, b in zip(auto, results.get(fp32, []), bf16) if not any("error" in r for r in (a, f, b))]
        if ratios:
            out[f"train-{model} auto over the better of fp32 and bf16"] = statistics.median(ratios)
        for dtype in ("fp32", "bf16"):
            value = speedup(results, f"gen-{model}-{dtype}-cache", f"gen-{model}-{dtype}-nocache", key="ms_per_token")
            if value is not None:
                out[f"gen-{model}-{dtype} cache over recompute"] = value
        value = speedup(results, f"gen-{model}-int8-cache", f"gen-{model}-fp32-cache", key="ms_per_token")
        if value is not None:
            out[f"gen-{model} int8 over fp32"] = value
    return out


def targets(summaries, ratios):
    """Issue 6's targets, where their cases were measured: (what, aim, measured, met)."""
    rows = [("bf16 training speed-up over fp32, medium model", BF16_SPEEDUP_TARGET,
             ratios.get("train-medium bf16 over fp32")),
            ("bf16 training MFU against the measured bf16 peak, medium model", BF16_MFU_TARGET,
             summaries.get("train-medium-bf16", {}).get("mfu")),
            ("KV-cache generation speed-up over full recompute, medium model", KV_CACHE_SPEEDUP_TARGET,
             ratios.get("gen-medium-fp32 cache over recompute")),
            ("--dtype=auto speed over the better of fp32 and bf16, default model", AUTO_TOLERANCE,
             ratios.get("train-default auto over the better of fp32 and bf16"))]
    return [{"target": what, "aim": aim, "measured": value, "met": value >= aim}
            for what, aim, value in rows if value is not None]


def machine_info(cfg, device):
    flags = []
    if Path("/proc/cpuinfo").exists():
        cpuinfo = Path("/proc/cpuinfo").read_text()
        have = set(cpuinfo.split("flags")[1].split("\n")[0].split()) if "flags" in cpuinfo else set()
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in have]
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
        cpu = names[0] if names else platform.processor()
    else:
        cpu = platform.processor()
    return {"cpu": cpu, "cpu_flags": flags, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(), "threads": cfg.threads or torch.get_num_threads(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "python": platform.python_version(),
            # OpenMP threads spin while waiting for work unless this is PASSIVE; on a busy machine that spinning
            # steals the cores they wait for (README.md, performance section)
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run_bench(cfg):
    """Every case, round after round; returns the report (also written to cfg.out as JSON)."""
    if cfg.quick:
        cases = ",".join(QUICK_CASES) if cfg.cases == "default" else cfg.cases
        cfg = replace(cfg, cases=cases, rounds=1, seconds=0.2, gen_tokens=40)
    names = list(DEFAULT_CASES) if cfg.cases == "default" else [n.strip() for n in cfg.cases.split(",") if n.strip()]
    for name in names:
        parse_case(name)
    try:
        device = pick_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    report = {"command": " ".join(["python bench.py", *sys.argv[1:]]) if Path(sys.argv[0]).name == "bench.py" else None,
              "config": asdict(cfg), "machine": machine_info(cfg, device), "load_average_before": load_average()}
    # First, so that a wrong checkpoint fails before the timings rather than after
    report["int8_loss"] = [int8_loss_change(path.strip(), cfg.threads) for path in cfg.int8_loss.split(",") if path.strip()]
    results = {name: [] for name in names}
    # A fresh compilation cache: the first round's compile_s is what a first run of train.py pays.
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache:
        previous, os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR"), cache
        try:
            for round_number in range(cfg.rounds):
                for name in names:
                    print(f"round {round_number + 1}/{cfg.rounds}: {name}", file=sys.stderr, flush=True)
                    results[name].append(run_isolated(name, cfg) if cfg.isolate else run_here(name, cfg))
        finally:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            if previous is not None:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous
    report["load_average_after"] = load_average()
    peaks = {parse_case(name)["dtype"]: statistics.median(x["gflops"] for x in r if "error" not in x)
             for name, r in results.items() if name.startswith("peak-") and any("error" not in x for x in r)}
    summaries = {name: summarize(rounds, peaks) for name, rounds in results.items()}
    ratios = speedups(results)
    report.update(peak_gflops=peaks, cases=summaries, speedups=ratios, targets=targets(summaries, ratios))
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


# ----------------------------------------------------------------------------------------------------
# The table


def fmt(value, pattern):
    return "-" if value is None else pattern.format(value)


def table(report):
    lines = [f"{report['machine']['cpu']} ({', '.join(report['machine']['cpu_flags']) or 'no listed flags'}), "
             f"{report['machine']['device']}, {report['machine']['threads']} threads, torch {report['machine']['torch']}; "
             f"load average {fmt(report['load_average_before'][0] if report['load_average_before'] else None, '{:.2f}')}"
             f" -> {fmt(report['load_average_after'][0] if report['load_average_after'] else None, '{:.2f}')}",
             f"{'case':<28}{'tokens/s':>10}{'ms/iter':>10}{'GFLOP/s':>9}{'MFU':>7}{'compile s':>11}{'peak MB':>9}"]
    for name, s in report["cases"].items():
        if "error" in s:
            lines.append(f"{name:<28}failed: {s['error']}")
            continue
        ms = s.get("ms_per_iter", s.get("ms_per_token"))
        lines.append(f"{name:<28}{fmt(s.get('tokens_per_s'), '{:,.0f}'):>10}{fmt(ms, '{:.1f}'):>10}"
                     f"{fmt(s.get('gflops'), '{:.1f}'):>9}{fmt(s.get('mfu'), '{:.0%}'):>7}"
                     f"{fmt(s.get('compile_s'), '{:.0f}'):>11}{s['peak_rss_mb']:>9.0f}")
        if "decision" in s:
            lines.append(f"{'':<28}auto chose {s['decision']}")
    lines += [f"{what}: x{value:.2f}" for what, value in report["speedups"].items()]
    lines += [f"int8 whole-validation loss, {r['n_layer']} layers x {r['n_embd']} ({r['checkpoint']}): {r['val_loss_fp32']:.4f}"
              f" -> {r['val_loss_int8']:.4f} ({r['change']:+.4f} nats), evaluation {r['seconds_fp32']:.0f} s -> "
              f"{r['seconds_int8']:.0f} s" for r in report["int8_loss"]]
    lines += [f"{'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['measured']:.2f} (aim {t['aim']})"
              for t in report["targets"]]
    return "\n".join(lines)


def main(argv=None):
    cfg = parse_config(BenchConfig, argv)
    if cfg.case:  # a child of run_isolated: one case, its result as the last line of output
        print(json.dumps(run_case(cfg.case, cfg)))
        return None
    report = run_bench(cfg)
    print(table(report))
    print(f"wrote {cfg.out}")
    return report


if __name__ == "__main__":
    cli(main)
