"""A character-level language model of Shakespeare (the TF1 char-RNN tutorial), on npl.

Model, written as the TF1 tutorial writes it::

    embedding = [V, E] variable;   inputs = embedding_lookup(embedding, ids)     # [B, T] -> [B, T, E]
    outputs, state = dynamic_rnn(cell, inputs, initial_state=state)               # [B, T, H]
    logits = outputs @ softmax_w + softmax_b                                      # [B, T, H] @ [H, V]
    loss = sequence_loss(logits, targets, ones)            # mean cross entropy per character
    grads, _ = clip_by_global_norm(grads, 4.5);  Adam

and its backward, by hand (npl has no autograd)::

    d_softmax_w = outputs^T @ d_logits;   d_softmax_b = sum(d_logits)
    d_outputs = d_logits @ softmax_w^T
    d_inputs, _ = trace.backward(d_outputs, None)          # BPTT through the LSTM
    d_embedding = emb_trace.backward(d_inputs)             # IndexedSlices: only the rows looked up

The text (tinyshakespeare, 1.1M characters, 65 distinct) is split 90% / 10% into training and
validation; each is cut into ``B`` contiguous streams and read in windows of ``T`` characters with
the LSTM state carried from one window to the next (``npl.train.fit(stateful=True)``).

Sampling uses a second model object -- batch 1, one character per step via ``cell(x, state)`` --
that holds the SAME arrays as the training model (TF1 builds it with ``reuse=True``), so it sees
every update.  It starts from the prime "thou art".

Run:  python examples/shakespeare_char.py                     (about 5 minutes on a 2-core CPU)
      python examples/shakespeare_char.py --time-limit 120    (stop training after 2 minutes)
      python examples/shakespeare_char.py --quick             (a few seconds, 50k characters)
Data: tinyshakespeare.txt, found through $NPL_DATA_DIR (or downloaded; see npl.data.load_text).
"""
import argparse
import math
import os
import sys
import time
import types

if __name__ == "__main__":
    # Small matrices: one BLAS thread is faster than several, and far faster on a busy machine
    # (multi-threaded OpenBLAS spins while it waits for a core).  Must be set before NumPy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import npl
from npl import train
from npl.cells import glorot_uniform

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:             # examples/_cli.py, also when this file is loaded by path
    sys.path.insert(0, _HERE)
import _cli  # noqa: E402  (the scripts' argument helpers)

PRIME = "thou art"


class CharRNN:
    """Embedding [V, E] -> ``layers`` x BasicLSTMCell(H) -> softmax_w [H, V], softmax_b [V].

    ``forward(ids [B, T], initial_state=None) -> (logits [B, T, V], trace)``; ``trace.final_state``
    is the LSTM state to carry into the next window; ``trace.backward(d_logits)`` fills ``grads``
    (``grads["embedding"]`` is an :class:`npl.IndexedSlices`, the rows that were looked up).
    """

    def __init__(self, vocab_size, embed_size=64, hidden=256, layers=1, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        xp = npl.backend.default_xp()             # numpy, or cupy under NPL_BACKEND=cupy
        self.embedding = xp.asarray(rng.uniform(-0.1, 0.1, (vocab_size, embed_size)).astype(dtype))
        cells = [npl.rnn.BasicLSTMCell(hidden, seed=seed + 1 + k) for k in range(layers)]
        self.cell = cells[0] if layers == 1 else npl.rnn.MultiRNNCell(cells)
        self.cell.build(embed_size, dtype)
        self.softmax_w = xp.asarray(glorot_uniform((hidden, vocab_size), rng, dtype))
        self.softmax_b = xp.zeros(vocab_size, dtype)
        self._d_softmax_w = xp.zeros_like(self.softmax_w)
        self._d_softmax_b = xp.zeros_like(self.softmax_b)
        self._d_embedding = None

    @property
    def params(self):
        p = {"embedding": self.embedding}
        p.update({"rnn/%s" % k: v for k, v in self.cell.params.items()})
        p.update({"softmax_w": self.softmax_w, "softmax_b": self.softmax_b})
        return p

    @property
    def grads(self):
        g = {"embedding": self._d_embedding}
        g.update({"rnn/%s" % k: v for k, v in self.cell.grads.items()})
        g.update({"softmax_w": self._d_softmax_w, "softmax_b": self._d_softmax_b})
        return g

    def zero_grad(self):
        self.cell.zero_grad()
        self._d_softmax_w[...] = 0
        self._d_softmax_b[...] = 0
        self._d_embedding = None

    def zero_state(self, batch_size):
        return self.cell.zero_state(batch_size, self.embedding.dtype)

    def forward(self, ids, initial_state=None):
        inputs, emb_trace = npl.nn.embedding_lookup(self.embedding, ids, return_trace=True)   # [B, T, E]
        outputs, final_state, trace = npl.nn.dynamic_rnn(
            self.cell, inputs, initial_state=initial_state, dtype=inputs.dtype, return_trace=True)
        B, T, H = outputs.shape
        logits = (outputs.reshape(B * T, H) @ self.softmax_w).reshape(B, T, -1)   # [BT, H] @ [H, V]
        logits += self.softmax_b

        def backward(d_logits):
            d2 = d_logits.reshape(B * T, -1)                                    # [BT, V]
            self._d_softmax_w += outputs.reshape(B * T, H).T @ d2               # [H, BT] @ [BT, V]
            self._d_softmax_b += d2.sum(axis=0)
            d_outputs = (d2 @ self.softmax_w.T).reshape(B, T, H)                # [BT, V] @ [V, H]
            d_inputs, _ = trace.backward(d_outputs, None)    # truncated BPTT: stops at the window
            self._d_embedding = emb_trace.backward(d_inputs)                    # IndexedSlices

        return logits, types.SimpleNamespace(backward=backward, final_state=final_state)


class Sampler:
    """The sampling model: batch 1, one step at a time, sharing the training model's arrays.

    TF1 builds a second graph with ``batch_size = seq_length = 1`` and ``reuse=True``; here the
    sampler simply holds references to the same embedding, cell and softmax arrays.
    """

    def __init__(self, model, vocab):
        self.embedding, self.cell = model.embedding, model.cell
        self.softmax_w, self.softmax_b = model.softmax_w, model.softmax_b
        self.vocab = vocab

    def step(self, char, state):
        """Feed one character; return the next-character probabilities [V] and the new state."""
        x = self.embedding[[self.vocab.stoi[char]]]                      # [1, E]
        h, state = self.cell(x, state)                                  # [1, H]
        logits = (h @ self.softmax_w + self.softmax_b)[0]               # [1, H] @ [H, V]
        return logits, state

    def sample(self, prime=PRIME, length=400, temperature=0.8, seed=0):
        """``prime`` followed by ``length`` sampled characters."""
        unknown = sorted(set(prime) - set(self.vocab.stoi))
        if not prime or unknown:
            raise ValueError("prime must be a non-empty string of vocabulary characters, got %r "
                             "(unknown: %r)" % (prime, unknown))
        if not temperature > 0:
            raise ValueError("temperature must be > 0, got %r" % (temperature,))
        rng = np.random.default_rng(seed)
        state = self.cell.zero_state(1, self.embedding.dtype)
        for ch in prime[:-1]:                                           # warm the state on the prime
            _, state = self.step(ch, state)
        text, ch = list(prime), prime[-1]
        for _ in range(length):
            logits, state = self.step(ch, state)
            z = npl.to_numpy(logits).astype(np.float64) / temperature
            p = np.exp(z - z.max())
            ch = self.vocab.itos[rng.choice(len(p), p=p / p.sum())]
            text.append(ch)
        return "".join(text)


def sequence_loss(targets, logits):
    """``legacy_seq2seq.sequence_loss`` with unit weights, in the ``loss(labels, output)`` form
    :func:`npl.train.fit` expects: the mean cross entropy per character and its gradient."""
    xp = npl.get_array_module(logits)
    return npl.losses.sequence_loss(logits, targets, xp.ones(targets.shape, logits.dtype),
                                    time_major=False)


def plot(path, history, val, vocab_size, title):
    fig = train.new_figure((8, 4), required=False)
    if fig is None:
        return None
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(history.step, history.loss, lw=0.6, alpha=0.7, label="training loss (per window)")
    if val:
        s, v = zip(*val)
        ax.plot(s, v, "o-", color="C3", label="validation loss")
    ax.axhline(math.log(vocab_size), color="k", ls=":", lw=0.8,
               label="uniform guess, ln %d" % vocab_size)
    ax.set_xlabel("step")
    ax.set_ylabel("cross entropy per character (nats)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


QUICK = dict(chars=50000, hidden=64, embed=32, epochs=1, batch_size=32, num_steps=25,
             learning_rate=0.01, sample_length=120)                     # --quick's defaults


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=_cli.positive_int, default=8)
    p.add_argument("--batch-size", type=_cli.positive_int, default=64, help="parallel streams")
    p.add_argument("--num-steps", type=_cli.positive_int, default=50,
                   help="characters per window (truncated BPTT)")
    p.add_argument("--learning-rate", "--lr", type=_cli.positive_float, default=0.002)
    p.add_argument("--clip-norm", type=_cli.positive_float, default=4.5)
    p.add_argument("--hidden", type=_cli.positive_int, default=256)
    p.add_argument("--layers", type=_cli.positive_int, default=1)
    p.add_argument("--embed", type=_cli.positive_int, default=64)
    p.add_argument("--chars", type=_cli.positive_int, default=None,
                   help="use the first N characters of the text")
    p.add_argument("--time-limit", type=_cli.positive_float, default=None,
                   help="stop training after this many seconds")
    p.add_argument("--sample-length", type=_cli.nonnegative_int, default=400,
                   help="characters sampled after the prime (0: the prime only)")
    p.add_argument("--temperature", type=_cli.positive_float, default=0.8)
    p.add_argument("--prime", default=PRIME)
    p.add_argument("--seed", type=_cli.nonnegative_int, default=0)
    p.add_argument("--quick", action="store_true", help=_cli.quick_help("a short run", QUICK))
    p.add_argument("--out", default="out", help="folder for the plot and the sampled text")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv):
    p = build_parser()
    args = _cli.parse_with_quick(p, argv, QUICK)
    if not args.prime:
        p.error("argument --prime: must be a non-empty string")
    return args


def split_point(n):
    """Characters 0..split-1 train, split..n-1 validate (90% / 10%)."""
    return int(0.9 * n)


def check_text_size(n, args):
    """Both parts must give every one of the --batch-size streams at least 2 characters (an input
    and its target): an argparse error naming --chars (or --batch-size) otherwise."""
    split = split_point(n)
    if min(split, n - split) >= 2 * args.batch_size:
        return
    need = n
    while min(split_point(need), need - split_point(need)) < 2 * args.batch_size:
        need += 1
    if args.chars is not None and args.chars < need:
        build_parser().error("argument --chars: %d characters are too few for %d streams "
                             "(--batch-size): the 10%% validation part needs 2 characters per "
                             "stream; use at least %d" % (n, args.batch_size, need))
    build_parser().error("argument --batch-size: %d streams are too many for a text of %d characters "
                         "(the 10%% validation part needs 2 characters per stream)"
                         % (args.batch_size, n))


def main(argv=None):
    """Train, report the loss and perplexity, sample from the prime; returns a dict of results."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    text = npl.data.load_text(data_dir=args.data_dir)
    vocab = npl.data.CharVocab.from_text(text)                 # the whole text's characters
    unknown = sorted(set(args.prime) - set(vocab.stoi))
    if unknown:                                                 # refused before training, not after
        build_parser().error("argument --prime: characters not in the text: %r" % "".join(unknown))
    ids = vocab.encode(text[:args.chars] if args.chars else text)
    check_text_size(len(ids), args)
    split = split_point(len(ids))
    x, y = train.make_streams(ids[:split], args.batch_size)            # [B, L], y = x shifted by one
    x_val, y_val = train.make_streams(ids[split:], args.batch_size)
    print("text: %d characters, vocabulary %d; training streams %s, validation streams %s"
          % (len(ids), len(vocab), x.shape, x_val.shape), flush=True)

    model = CharRNN(len(vocab), args.embed, args.hidden, args.layers, seed=args.seed)
    sampler = Sampler(model, vocab)
    shared = [k for k, v in model.params.items()
              if any(v is a for a in (sampler.embedding, sampler.softmax_w, sampler.softmax_b))
              or any(v is a for a in sampler.cell.params.values())]
    print("model: embedding %s, %s, softmax_w %s; the sampler shares all %d of its arrays"
          % (model.embedding.shape, model.cell, model.softmax_w.shape, len(shared)))

    val = []                                     # (step, validation loss) after each epoch
    step_count = [0]

    def validate(m):
        loss = train.evaluate(m, sequence_loss, x_val, y_val, stateful=True, num_steps=args.num_steps)
        val.append((step_count[0], loss))
        return {"val_loss": loss, "val_perplexity": math.exp(loss)}

    def on_step(info):
        step_count[0] = info["step"]
        return args.time_limit is not None and time.perf_counter() - t0 > args.time_limit

    history = train.fit(model, sequence_loss, train.AdamOptimizer(args.learning_rate), x, y,
                        batch_size=args.batch_size, epochs=args.epochs, stateful=True,
                        num_steps=args.num_steps, clip_norm=args.clip_norm, eval_fn=validate,
                        callbacks=[on_step], progress=not args.no_progress)
    loss = history.loss
    k = max(1, min(20, len(loss) // 10))                       # smooth the ends over k windows
    first, last = float(np.mean(loss[:k])), float(np.mean(loss[-k:]))
    sample = sampler.sample(args.prime, args.sample_length, args.temperature, seed=args.seed)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "shakespeare_sample.txt"), "w", encoding="utf-8") as f:
        f.write(sample + "\n")
    path = plot(os.path.join(args.out, "shakespeare_loss.png"), history, val, len(vocab),
                "char-LSTM (%d units): validation perplexity %.2f" % (args.hidden, math.exp(val[-1][1])))
    results = {"loss": loss, "loss_first": first, "loss_last": last,
               "val_loss": val[-1][1], "val_perplexity": math.exp(val[-1][1]), "val": val,
               "steps": len(loss), "train_minutes": history.seconds / 60, "sample": sample,
               "vocab": "".join(vocab.itos), "shared_arrays": len(shared), "plots": [path] if path else []}
    print("\ntraining loss: first window %.3f; mean of the first %d windows %.3f -> of the last %d %.3f "
          "nats/char (perplexity %.1f -> %.2f); %d steps, %.1f min"
          % (loss[0], k, first, k, last, math.exp(first), math.exp(last), len(loss),
             results["train_minutes"]))
    print("validation loss %.3f, perplexity %.2f" % (results["val_loss"], results["val_perplexity"]))
    print("\n--- sample (temperature %g) ---\n%s\n---" % (args.temperature, sample))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
