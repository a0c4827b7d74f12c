#!/usr/bin/env python3
"""Biased PMF on MovieLens-100K in PyTorch: the baseline of the Cumulus training benchmark.

The model, loss, optimizer, batch size and train/test split are the ones `cumulus train` uses for
`arch = "pmf"` (see bench/train/README.md for what is and is not identical):

  r(u, i) = g + b_u + b_i + <p_u, q_i>,  p, q ~ N(0, 0.1^2), biases and g start at 0,
  MSE loss (mean over the batch), torch.optim.Adam (betas 0.9/0.999, eps 1e-8), batch 256.

The split is Cumulus' own: ids are numbered in order of first appearance in the file, rows are
shuffled with SplitMix64 + Fisher-Yates (cumulus-models `data/split.rs`) and the first
round(n * test_fraction) shuffled rows are the test split.

Two modes:

  calibrate    one process, trains for --epochs and prints the best test RMSE (the benchmark's
               target is derived from it, see target.json);
  distributed  --workers processes (torch.multiprocessing), gloo on 127.0.0.1, each on its own
               shard of the training split; after every backward pass the gradients of all
               parameters are flattened into one buffer and all-reduced (summed, then divided by
               the worker count), as DistributedDataParallel does with dense embedding gradients.
               Rank 0 evaluates every --eval-every steps and the run stops at --target-rmse (or
               --epochs / --max-wall-secs).

Application bytes are what gloo's ring all-reduce sends: for a buffer of B bytes each of W ranks
sends 2 (W - 1) / W * B (reduce-scatter, then all-gather), so one all-reduce moves 2 (W - 1) B
bytes over all links. The stop flag broadcast from rank 0 at each evaluation is counted as
(W - 1) * 4 bytes.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

MASK64 = (1 << 64) - 1


def shuffled_indices(n, seed):
    """`0..n` shuffled exactly as cumulus-models' `shuffled_indices` (SplitMix64, Fisher-Yates)."""
    order = list(range(n))
    state = seed & MASK64
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        j = (z * (i + 1)) >> 64
        order[i], order[j] = order[j], order[i]
    return order


def load_ratings(path):
    """(users, items, ratings, n_users, n_items) with dense ids in order of first appearance."""
    users, items, ratings = [], [], []
    user_ids, item_ids = {}, {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0].strip() for h in header]
        cu, ci, cr = names.index("user_id"), names.index("item_id"), names.index("rating")
        for line in f:
            if not line.strip():
                continue
            fields = [x.strip() for x in line.rstrip("\n").split("\t")]
            users.append(user_ids.setdefault(fields[cu], len(user_ids)))
            items.append(item_ids.setdefault(fields[ci], len(item_ids)))
            ratings.append(float(fields[cr]))
    return (
        np.array(users, dtype=np.int64),
        np.array(items, dtype=np.int64),
        np.array(ratings, dtype=np.float32),
        len(user_ids),
        len(item_ids),
    )


def split(n, test_fraction, seed):
    """(train rows, test rows) as `Dataset::train_test_split` makes them."""
    n_test = min(max(int(math.floor(n * test_fraction + 0.5)), 1), n - 1)
    order = shuffled_indices(n, seed)
    return np.array(order[n_test:], dtype=np.int64), np.array(order[:n_test], dtype=np.int64)


class BiasedPmf(torch.nn.Module):
    def __init__(self, n_users, n_items, k):
        super().__init__()
        self.user_factors = torch.nn.Parameter(torch.randn(n_users, k) * 0.1)
        self.item_factors = torch.nn.Parameter(torch.randn(n_items, k) * 0.1)
        self.user_bias = torch.nn.Parameter(torch.zeros(n_users))
        self.item_bias = torch.nn.Parameter(torch.zeros(n_items))
        self.global_bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, u, i):
        dot = (self.user_factors[u] * self.item_factors[i]).sum(1)
        return dot + self.user_bias[u] + self.item_bias[i] + self.global_bias


class Data:
    def __init__(self, args):
        users, items, ratings, self.n_users, self.n_items = load_ratings(args.data)
        train, test = split(len(ratings), args.test_fraction, args.seed)
        self.train = (torch.from_numpy(users[train]), torch.from_numpy(items[train]),
                      torch.from_numpy(ratings[train]))
        self.test = (torch.from_numpy(users[test]), torch.from_numpy(items[test]),
                     torch.from_numpy(ratings[test]))

    def shard(self, rank, world, seed):
        """Shard `rank` of `world`: every world-th row of a seeded shuffle, from offset rank."""
        n = len(self.train[2])
        order = torch.from_numpy(np.random.default_rng(seed).permutation(n))[rank::world]
        return tuple(t[order] for t in self.train)


@torch.no_grad()
def test_rmse(model, data):
    u, i, r = data.test
    return float(torch.sqrt(torch.mean((model(u, i) - r) ** 2)))


def batch_at(shard, cursor, batch):
    """The minibatch at `cursor`, read sequentially and wrapping around (as Cumulus' workers do)."""
    n = len(shard[2])
    rows = (torch.arange(batch) + cursor) % n
    return tuple(t[rows] for t in shard)


def make_model(data, args):
    torch.manual_seed(args.seed)
    model = BiasedPmf(data.n_users, data.n_items, args.factors)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    return model, opt


def calibrate(args):
    torch.set_num_threads(args.threads)
    data = Data(args)
    model, opt = make_model(data, args)
    shard = data.train
    n_train = len(shard[2])
    steps = int(args.epochs * n_train / args.batch_size)
    history, best, cursor = [], (float("inf"), 0), 0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        u, i, r = batch_at(shard, cursor, args.batch_size)
        cursor += args.batch_size
        loss = torch.mean((model(u, i) - r) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == steps:
            rmse = test_rmse(model, data)
            epoch = step * args.batch_size / n_train
            history.append({"elapsed_secs": time.perf_counter() - start, "steps": step,
                            "epoch": epoch, "test_rmse": rmse})
            if rmse < best[0]:
                best = (rmse, epoch)
    out = {
        "mode": "calibrate", "train_examples": n_train, "test_examples": len(data.test[2]),
        "best_test_rmse": best[0], "best_epoch": best[1], "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "factors": args.factors,
        "history": history,
    }
    write(args.out, out)
    print(f"best test RMSE {best[0]:.4f} at epoch {best[1]:.2f} "
          f"({n_train} train / {len(data.test[2])} test ratings)")


def worker(rank, args, port, t_spawn, results):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.workers)
    data = Data(args)
    model, opt = make_model(data, args)
    params = list(model.parameters())
    shard = data.shard(rank, args.workers, args.seed)
    n_train = len(data.train[2])
    w = args.workers
    max_steps = int(args.epochs * n_train / (args.batch_size * w))
    app_bytes = 0  # sent by all ranks together (the ranks are symmetric)
    history = []
    dist.barrier()
    start = time.perf_counter()
    stop = torch.zeros(1)
    reason = f"{args.epochs} epochs done"
    cursor, step = 0, 0
    while step < max_steps:
        step += 1
        u, i, r = batch_at(shard, cursor, args.batch_size)
        cursor += args.batch_size
        loss = torch.mean((model(u, i) - r) ** 2)
        opt.zero_grad()
        loss.backward()
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        app_bytes += 2 * (w - 1) * flat.numel() * flat.element_size()
        flat /= w
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        opt.step()
        if step % args.eval_every == 0 or step == max_steps:
            if rank == 0:
                rmse = test_rmse(model, data)
                elapsed = time.perf_counter() - start
                history.append({
                    "elapsed_secs": elapsed, "since_spawn_secs": time.time() - t_spawn,
                    "unix_time": time.time(),
                    "steps": step * w, "epoch": step * args.batch_size * w / n_train,
                    "loss": float(loss.detach()), "test_rmse": rmse, "app_bytes": app_bytes,
                })
                if args.target_rmse is not None and rmse <= args.target_rmse:
                    stop[0] = 1
                    reason = f"test_rmse {rmse:.4f} reached the target {args.target_rmse}"
                elif elapsed >= args.max_wall_secs:
                    stop[0] = 1
                    reason = f"wall-time limit of {args.max_wall_secs} s"
            dist.broadcast(stop, src=0)
            app_bytes += (w - 1) * stop.numel() * stop.element_size()
            if stop[0] > 0:
                break
    if rank == 0:
        results.put({"history": history, "stop_reason": reason, "params": int(
            sum(p.numel() for p in params)), "train_examples": n_train,
            "test_examples": len(data.test[2])})
    dist.barrier()
    dist.destroy_process_group()


def distributed(args):
    t_spawn = time.time()
    port = args.port or free_port()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(worker, args=(args, port, t_spawn, results), nprocs=args.workers,
                       join=True, start_method="spawn")
    res = results.get()
    hist = res["history"]
    final = hist[-1]
    reached = next((h for h in hist if args.target_rmse is not None
                    and h["test_rmse"] <= args.target_rmse), None)
    out = {
        "mode": "distributed", "system": "pytorch-gloo-allreduce", "workers": args.workers,
        "batch_size": args.batch_size, "lr": args.lr, "factors": args.factors,
        "target_rmse": args.target_rmse, "params": res["params"],
        "train_examples": res["train_examples"], "test_examples": res["test_examples"],
        "stop_reason": res["stop_reason"],
        "time_to_target_secs": reached["elapsed_secs"] if reached else None,
        "time_to_target_since_spawn_secs": reached["since_spawn_secs"] if reached else None,
        "bytes_to_target": reached["app_bytes"] if reached else None,
        "target_unix_time": reached["unix_time"] if reached else None,
        "final_test_rmse": final["test_rmse"], "app_bytes": final["app_bytes"],
        "wall_secs": time.time() - t_spawn, "history": hist,
    }
    write(args.out, out)
    print(f"pytorch W={args.workers}: final test RMSE {final['test_rmse']:.4f}, "
          f"{res['stop_reason']}, {final['app_bytes']} application bytes")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path, obj):
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["calibrate", "distributed", "selftest"])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data",
                                                   "downloads", "ml-100k.inter"))
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factors", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--eval-every", type=int, default=50, help="steps (per worker) between evaluations")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--target-rmse", type=float)
    p.add_argument("--max-wall-secs", type=float, default=600)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()
    if args.mode == "selftest":
        # The vector pinned in cumulus-models' split.rs test.
        assert shuffled_indices(6, 42) == [2, 5, 3, 1, 0, 4], shuffled_indices(6, 42)
        print("selftest ok")
    elif args.mode == "calibrate":
        calibrate(args)
    else:
        distributed(args)


if __name__ == "__main__":
    sys.exit(main())
