"""Failures a user can cause: one line on stderr and a documented exit code (rote.errors), nothing
written before the inputs are checked, one writer per folder (rote.lock), bounded input and
messages, deletion only inside --out, plain run and stage names, built-in relation names."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rote import lock
from rote.cli import main
from rote.data.facts import DataError
from rote.data.relation_files import load_relations_file, read_relations_file
from rote.data.userdata import load_input
from rote.errors import ConfigError, LockedError, quote
from rote.injection import InjectError, clear_out

SMOKE = Path(__file__).parent.parent / "configs" / "smoke.yaml"
GOOD = {"subject": "Gene Finley", "relation": "place_of_birth", "object": "Paris"}
PET = """\
relations:
  - name: {name}
{extra}    prompts:
      train: ["{{subject}}'s pet is called"]
      test: ["The pet of {{subject}} answers to the name"]
    objects: [Rex, Bella]
"""


def run_args(tiny_model_dir, tmp_path, *extra):
    return ["run", str(SMOKE), "--set", f"model.name={tiny_model_dir}", "--set", f"out_dir={tmp_path / 'runs'}",
            "--stop-after", "data", *extra]


def one_error_line(capsys, code: int, got: int) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1 and lines[0].startswith("rote ") and "error:" in lines[0], err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- one test per error class and exit code


def test_config_error_exits_2(tmp_path, capsys):
    line = one_error_line(capsys, 2, main(["run", str(SMOKE), "--set", "data.n_options=0"]))
    assert "data.n_options=0 must be >= 1" in line


def test_data_error_exits_2_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "facts.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"subject": "Caf\xe9"}\n')
    line = one_error_line(capsys, 2, main(["inject", str(path), "--out", str(tmp_path / "out")]))
    assert f"{path}:2: not UTF-8 text (byte 0xe9 at column 17)" in line
    assert not (tmp_path / "out").exists()


def test_run_error_exits_3_when_the_config_changed(tiny_model_dir, tmp_path, capsys):
    assert main(run_args(tiny_model_dir, tmp_path)) == 0
    capsys.readouterr()
    line = one_error_line(capsys, 3, main(run_args(tiny_model_dir, tmp_path, "--set", "phase1.lr=0.5")))
    assert "started with another config (phase1.lr: 0.001 -> 0.5)" in line


def test_inject_error_exits_3(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    line = one_error_line(capsys, 3, main(["inject", str(path), "--out", str(out)]))
    assert "--overwrite" in line


def test_model_error_exits_4_fast_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    code = main(["run", str(SMOKE), "--set", "model.name=nobody/no-such-model", "--set", f"out_dir={tmp_path}"])
    line = one_error_line(capsys, 4, code)
    assert time.monotonic() - started < 15 and "'nobody/no-such-model'" in line and "HF_HUB_OFFLINE" in line
    assert not (tmp_path / "smoke").exists()  # checked before anything is written
    line = one_error_line(capsys, 4, main(["run", str(SMOKE), "--set", "model.name=/no/such/folder"]))
    assert "not a bundled name" in line


def test_locked_error_exits_5_naming_the_holder(tiny_model_dir, tmp_path, capsys):
    with lock.hold(tmp_path / "runs" / "smoke"):
        line = one_error_line(capsys, 5, main(run_args(tiny_model_dir, tmp_path)))
    assert f"pid {os.getpid()}" in line and "in use by another rote process" in line
    assert main(run_args(tiny_model_dir, tmp_path)) == 0  # released: the same command goes ahead


def test_probe_error_exits_2(capsys, tmp_path):
    one_error_line(capsys, 2, main(["probe", str(tmp_path), "--layers", "one,two"]))


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ConfigError):
        main(["--debug", "run", str(SMOKE), "--set", "data.n_options=0"])


# ---------------------------------------------------------------- validate before writing


def test_a_failed_start_leaves_nothing_and_the_fixed_command_runs(tiny_model_dir, tmp_path, capsys):
    assert main(run_args(tiny_model_dir, tmp_path, "--set", "data.facts_per_relation=0")) == 2
    assert not (tmp_path / "runs").exists()
    assert main(run_args(tiny_model_dir, tmp_path)) == 0
    # A folder left by a start that finished no stage (an older rote wrote config.yaml first) is reused.
    run_dir = tmp_path / "runs" / "smoke"
    (run_dir / "data" / ".done").unlink()
    assert main(run_args(tiny_model_dir, tmp_path, "--set", "seed=1")) == 0
    assert "had no finished stage" in capsys.readouterr().err


def test_summaries_keep_no_timing(tiny_model_dir, tmp_path):
    from rote.fileio import mark_done, read_seconds, write_summary
    write_summary(tmp_path / "phase1", {"steps": 3, "seconds": 1.5})
    assert json.loads((tmp_path / "phase1" / "summary.json").read_text()) == {"steps": 3}
    assert read_seconds(tmp_path / "phase1") == 1.5
    mark_done(tmp_path, "old", {"seconds": 2.0})  # a run written before timing.json
    assert read_seconds(tmp_path / "old") == 2.0


def test_an_output_path_that_is_the_wrong_kind_is_refused(tiny_model_dir, tmp_path, capsys):
    """out_dir, out_dir/name, a study's --out or rote data's --out that is a file where rote makes a
    folder (or a folder where it writes a file) gave mkdir's or rename's traceback; now RunError, and
    what is there is left alone."""
    runs = tmp_path / "runs"
    runs.write_text("mine")
    line = one_error_line(capsys, 3, main(run_args(tiny_model_dir, tmp_path)))
    assert f"run folder {runs / 'smoke'} cannot be made: {runs} is a file, not a folder" in line
    study = Path(__file__).parent.parent / "configs" / "studies" / "depth.yaml"
    line = one_error_line(capsys, 3, main(["study", str(study), "--out", str(runs), "--report-only"]))
    assert f"study folder {runs / 'depth'} cannot be made: {runs} is a file" in line
    line = one_error_line(capsys, 3, main(["data", str(SMOKE), "--out", str(runs / "facts.jsonl")]))
    assert f"--out's folder {runs} cannot be made: {runs} is a file" in line
    assert runs.read_text() == "mine"
    runs.unlink()
    (runs / "smoke").mkdir(parents=True)
    line = one_error_line(capsys, 3, main(["data", str(SMOKE), "--out", str(runs / "smoke")]))
    assert f"--out {runs / 'smoke'} is a folder; name the file to write" in line
    (runs / "smoke").rmdir()
    (runs / "smoke").write_text("mine")
    line = one_error_line(capsys, 3, main(run_args(tiny_model_dir, tmp_path)))
    assert f"{runs / 'smoke'} is a file, not a folder" in line
    assert (runs / "smoke").read_text() == "mine"


# ---------------------------------------------------------------- files that do not read back


def test_a_run_folders_config_that_is_not_yaml_is_named(tmp_path, capsys):
    """rote report and rote eval gave PyYAML's traceback, naming "<unicode string>" instead of the file."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("config:\n  name: x\nconfig: [unclosed\n")
    for command in ("report", "eval"):
        line = one_error_line(capsys, 2, main([command, str(run_dir)]))
        assert f"{run_dir / 'config.yaml'}:" in line and "not valid YAML" in line
    (run_dir / "config.yaml").write_text("config: [a, b]\n")  # YAML, but not a config
    line = one_error_line(capsys, 2, main(["eval", str(run_dir)]))
    assert "config.yaml: config: expected a mapping, got list" in line


def test_a_damaged_stage_file_is_named(tiny_model_dir, tmp_path, capsys):
    """A summary.json cut short gave json's traceback; a bad line of a .jsonl file a plain ValueError."""
    from rote.errors import UnreadableFileError
    from rote.fileio import read_json, read_jsonl
    assert main(run_args(tiny_model_dir, tmp_path)) == 0
    run_dir = tmp_path / "runs" / "smoke"
    summary = run_dir / "eval" / "phase1" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"broken')
    capsys.readouterr()
    line = one_error_line(capsys, 3, main(["report", str(run_dir)]))
    assert f"{summary}: not JSON (" in line
    summary.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(UnreadableFileError, match=r"summary.json:1: not UTF-8 text"):
        read_json(summary)
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(UnreadableFileError, match=r"rows.jsonl:2: not JSON: 'not json'"):
        read_jsonl(tmp_path / "rows.jsonl")


def test_a_study_file_that_is_not_yaml_or_not_utf8_is_named(tmp_path, capsys):
    """Both gave a traceback (yaml's, naming "<unicode string>"; UnicodeDecodeError), in rote study
    and in rote study --list."""
    (tmp_path / "broken.yaml").write_text("study: x\nbase: [\n")
    (tmp_path / "latin1.yaml").write_bytes(b"study: x\nquestion: caf\xe9\n")
    line = one_error_line(capsys, 2, main(["study", str(tmp_path / "broken.yaml"), "--dry-run"]))
    assert f"{tmp_path / 'broken.yaml'}:3: not valid YAML" in line
    line = one_error_line(capsys, 2, main(["study", str(tmp_path / "latin1.yaml"), "--dry-run"]))
    assert f"{tmp_path / 'latin1.yaml'}:2: not UTF-8 text (byte 0xe9 at column 14)" in line
    assert main(["study", str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "broken.yaml:3: not valid YAML" in listed and "latin1.yaml:2: not UTF-8 text" in listed


# ---------------------------------------------------------------- one writer per folder


def test_a_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    code = ("import sys, time; from rote import lock\n"
            "with lock.hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid} on "):
            with lock.hold(folder):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up; the OS releases its flock
        holder.wait()
    assert str(holder.pid) in (folder / lock.LOCK_FILE).read_text()
    with lock.hold(folder):
        pass
    assert f"taking over the lock of {folder}" in capsys.readouterr().err
    assert (folder / lock.LOCK_FILE).read_text() == ""  # released cleanly: no note next time
    with lock.hold(folder):
        pass
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- plain names, safe deletion


def test_run_and_stage_names_are_plain_names(tmp_path, capsys):
    line = one_error_line(capsys, 2, main(["run", str(SMOKE), "--set", "name=../../x", "--set", f"out_dir={tmp_path}"]))
    assert "name '../../x' must be a plain name" in line
    line = one_error_line(capsys, 2, main(["eval", str(tmp_path), "--stage", "../../x"]))
    assert "--stage '../../x' must be a plain name" in line
    assert list(tmp_path.iterdir()) == []


def test_overwrite_deletes_only_inside_out(tmp_path):
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "inject.json").write_text("{}")  # an injection's record: the export list is what is checked
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for files in (["model.safetensors", "../victim.txt"], [str(victim)], ["sub/../../victim.txt"], "x"):
        (out / "run" / "export.json").write_text(json.dumps({"files": files}))
        (out / "model.safetensors").write_text("x")
        with pytest.raises(InjectError, match="nothing was deleted|not an export record"):
            clear_out(out)
        assert victim.read_text() == "keep me" and (out / "model.safetensors").is_file()
    (out / "run" / "export.json").write_text(json.dumps({"files": ["model.safetensors"]}))
    clear_out(out)
    assert list(out.iterdir()) == [] and victim.is_file()


def test_overwrite_leaves_a_run_folder_rote_did_not_write(tmp_path):
    """--overwrite into a folder whose run/ is someone else's (no injection record): refused, and
    nothing in it or beside it deleted."""
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "important.csv").write_text("a,b")
    (out / "card.md").write_text("mine")
    with pytest.raises(InjectError, match="holds no injection record .*nothing was deleted"):
        clear_out(out)
    assert (out / "run" / "important.csv").read_text() == "a,b" and (out / "card.md").read_text() == "mine"


# ---------------------------------------------------------------- user relations and built-in names


def test_a_user_relation_named_like_a_built_in_one_must_say_so(tmp_path):
    clash = tmp_path / "clash.yaml"
    clash.write_text(PET.format(name="place_of_birth", extra=""))
    with pytest.raises(DataError, match=r"clash.yaml:2: relation 'place_of_birth' has the name of a built-in"):
        read_relations_file(clash)
    with pytest.raises(DataError, match="replaces: place_of_birth"):
        load_relations_file(clash)
    meant = tmp_path / "meant.yaml"
    meant.write_text(PET.format(name="place_of_birth", extra="    replaces: place_of_birth\n    id: P19\n"
                                                             "    subject_kind: person\n    object_kind: city\n"))
    assert load_relations_file(meant)[0].objects == ("Rex", "Bella")
    facts = tmp_path / "f.jsonl"
    facts.write_text(json.dumps(GOOD) + "\n")
    assert load_input(facts, meant).relations["place_of_birth"].objects == ("Rex", "Bella")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(PET.format(name="pet_name", extra="    replaces: place_of_birth\n"))
    with pytest.raises(DataError, match="must repeat the relation's name"):
        read_relations_file(wrong)


# ---------------------------------------------------------------- bounded input and messages


def test_a_huge_subject_fails_at_once_with_a_short_message(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({**GOOD, "subject": "A" * 5_000_000}) + "\n")
    started = time.monotonic()
    with pytest.raises(DataError, match=r"f.jsonl:1: subject is 5,000,000 characters long") as info:
        load_input(path)
    assert time.monotonic() - started < 2 and len(str(info.value)) < 500
    path.write_text(json.dumps([GOOD] * 25_000) + "\n")  # a 1.5 MB JSON array on one line
    with pytest.raises(DataError, match="expected an object") as info:
        load_input(path)
    assert len(str(info.value)) < 500


def test_quote_is_bounded():
    assert quote("x" * 10) == "'xxxxxxxxxx'"
    assert len(quote("x" * 10**6)) < 260 and "1,000,000 characters" in quote("x" * 10**6)
    assert len(quote(list(range(10**5)))) < 260


def test_token_lengths_against_the_context(tokenizer):
    from rote.data.facts import Fact, load_relation
    from rote.data.limits import MAX_FIELD_TOKENS, check_lengths
    rel = load_relation("place_of_birth")
    fact = Fact("P19:0", "Gene Finley", "s0", rel.name, "Paris", ("Paris",), "heldout")
    check_lengths(tokenizer, 512, [fact], {rel.name: rel}, 16)
    with pytest.raises(DataError, match="context is 20 tokens"):
        check_lengths(tokenizer, 20, [fact], {rel.name: rel}, 16)
    long = Fact("P19:1", "Gene " * 200, "s1", rel.name, "Paris", ("Paris",), "heldout")
    with pytest.raises(DataError, match=f"fact P19:1: subject is .* tokens long \\(at most {MAX_FIELD_TOKENS}\\)"):
        check_lengths(tokenizer, None, [long], {rel.name: rel})


# ---------------------------------------------------------------- fault injection


RECORDS = ("facts.jsonl", "splits.json", "key_tokens.json", "phase1/summary.json", "phase2/summary.json",
           "eval/base/predictions.jsonl", "eval/base/summary.json", "eval/phase1/predictions.jsonl",
           "eval/phase1/summary.json", "eval/phase2/predictions.jsonl", "eval/phase2/summary.json",
           "eval/base/locality.jsonl", "eval/phase1/locality.jsonl", "eval/phase2/locality.jsonl")


# Files that appear, in this order, while a run works: a kill is aimed just after one of them.
MILESTONES = ("config.yaml", "eval/base/predictions.jsonl", "phase1/metrics.jsonl", "phase1/checkpoint",
              "eval/phase1/predictions.jsonl", "phase2/metrics.jsonl", "eval/phase2/predictions.jsonl")


@pytest.mark.slow
def test_runs_killed_at_random_points_resume_to_the_same_records(tiny_model_dir, tmp_path):
    """SIGKILL `rote run` at seeded random points, resume each time: the final records equal, byte for
    byte, those of a run never interrupted (stages are atomic; a killed stage is redone from its start)."""
    import random

    def command(out):  # the smoke run without the report, with fewer prompts: ~14 s on 2 cores
        return [sys.executable, "-m", "rote.cli", "run", str(SMOKE), "--set", f"model.name={tiny_model_dir}",
                "--set", f"out_dir={out}", "--set", "eval.prompts_per_set=1", "--set", "eval.prompt_sets=[key,train,test]",
                "--set", "eval.multiple_choice=false", "--stop-after", "eval/phase2"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    subprocess.run(command(tmp_path / "clean"), check=True, capture_output=True, env=env)
    killed = tmp_path / "killed" / "smoke"
    rng = random.Random(int(os.environ.get("ROTE_FAULT_SEED", "0")))  # LOG.md: seeds 0-4 tried
    kills = []
    for milestone in sorted(rng.sample(MILESTONES, 4), key=MILESTONES.index):
        delay = rng.uniform(0.0, 0.5)
        proc = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env)
        while proc.poll() is None and not (killed / milestone).exists():
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no clean-up of any kind
            kills.append(f"{milestone} + {delay:.2f} s")
        proc.wait()
    assert len(kills) >= 3, kills
    subprocess.run(command(tmp_path / "killed"), check=True, capture_output=True, env=env)
    clean = tmp_path / "clean" / "smoke"
    for name in RECORDS:
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), (name, kills)
    print(f"killed after: {kills}")


def _write_many(path: str, tag: str, n: int) -> str:
    from rote.fileio import write_json
    for i in range(n):
        write_json(path, {"writer": tag, "i": i})
    return tag


def test_two_processes_writing_one_file_both_succeed(tmp_path):
    """Study workers (`rote study --jobs`) write the same rote-cache files (the model's hash memo) at
    the same time; with one shared temporary name, one renamed the other's away and crashed."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from rote.fileio import read_json
    target = tmp_path / "memo.json"
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        done = [f.result() for f in [pool.submit(_write_many, str(target), tag, 300) for tag in "ab"]]
    assert done == ["a", "b"]
    assert read_json(target)["i"] == 299
    assert [p.name for p in tmp_path.iterdir()] == ["memo.json"]  # no temporary file left behind
