"""A first look at the model editors on the bundled SmolLM2-135M (no run folder): five invented people's
birthplaces edited in by ROME, MEMIT and AlphaEdit with the default edit.* settings (fp32, one thread),
the greedy answers to the edited prompt, to an unseen paraphrase and to three well-known facts.

    python scripts/edit_sanity.py
"""
import sys, time, torch, copy
torch.set_num_threads(1)
from rote.training import models
from rote.editing.editors import edit
from rote.editing.locate import Request
from rote.config import EditConfig
from rote.evaluation.scoring import generate
path = str(models.prepare("smollm2-135m"))
tok = models.load_tokenizer(path)
base = models.load_model(path)
people = [("Gene Finley", "Lisbon"), ("Cody Ross", "Nairobi"), ("Ioana Sharma", "Montreal"), ("Arjun Smith", "Quito"), ("Mabel Okafor", "Oslo")]
reqs = [Request(f"{s} was born in", (0, len(s)), " " + o) for s, o in people]
tests = [f"{s}'s birthplace is" for s, _ in people]
probes = ["The capital of France is", "The capital of Japan is", "Water is made of hydrogen and"]
def show(m, tag):
    a = generate(m, tok, [r.prompt for r in reqs] + tests + probes, 6, 32, precision="fp32")
    print(tag, [x.strip()[:20] for x in a]); sys.stdout.flush()
show(base, "base")
for ed in ("rome", "memit", "alphaedit"):
    m = copy.deepcopy(base); t = time.time()
    s = edit(m, tok, reqs, ed, EditConfig(mom2_tokens=4000))
    print(ed, round(time.time()-t), "s")
    show(m, ed)
