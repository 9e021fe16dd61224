"""lorakit as a whole, through the real kaggle client against the stand-in: the workflow command by command, help and
offline commands, `--json` everywhere, command-line errors, every command's flags."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from lorakit_fixtures import (
    REPO, USERNAME, error_line, full_disk_after, lorakit_started, no_secret, one_document, push,
)


def test_happy_path_push_status_pull_submit_scores(kit):
    out, err = push(kit, "--set", "lora_r=8", message="r=8 baseline")
    assert f"pushed v1 of alice/{kit.slug}" in out
    assert "placeholder owner" in err and "using your username 'alice'" in err
    save = kit.state.calls("SaveKernel")[-1][2]
    assert save["slug"] == f"{USERNAME}/{kit.slug}"
    assert '"lora_r": 8' in save["text"]  # the build copy carries its overrides
    assert save["kernelType"] == "script" and save["language"] == "python"
    row = kit.row(1)
    assert row["message"] == "r=8 baseline"
    assert json.loads(row["overrides"]) == {"lora_r": 8}
    assert row["status"] == "QUEUED" and row["kernel_ref"] == f"alice/{kit.slug}"
    assert int(row["trainable_params"]) > 0 and len(row["config_hash"]) == 64
    pushed_hash = row["config_hash"]

    code, out, err = kit.run("status")
    assert code == 0 and "v1 QUEUED" in out
    code, out, err = kit.run("status", "--wait", "--timeout", "30")
    assert code == 0, err
    assert "v1 RUNNING" in out and "v1 COMPLETE" in out and "[0:00:00]" in out
    assert kit.row(1)["status"] == "COMPLETE"

    code, out, err = kit.run("pull")
    assert code == 0, err
    folder = kit.repo / "submissions" / "v1"
    for name in ("submission.csv", "probabilities.csv", "metrics.json", "log.txt", "training_curves.png",
                 "adapter/adapter_model.safetensors", "adapter/head.pt"):
        assert (folder / name).is_file(), name
    assert f"trainable parameters {int(kit.row(1)['trainable_params']):,}" in (folder / "log.txt").read_text()
    assert not [p for p in (kit.repo / "submissions").iterdir() if p.name.startswith(".v")]
    assert not list(folder.rglob("*.kaggle-partial"))
    row = kit.row(1)
    assert float(row["val_accuracy"]) == pytest.approx(0.901)
    assert float(row["run_minutes"]) == pytest.approx(21.5)
    assert row["config_hash"] == pushed_hash  # the run used the pushed config: no warning
    assert "did not use the pushed config" not in err

    code, out, err = kit.run("submit", "1", "--wait")
    assert code == 0, err
    assert "submitted v1 as submission 50000001" in out and "public 0.86120" in out
    assert kit.state.submissions[0].description.startswith(f"v1 {USERNAME}/{kit.slug} {pushed_hash[:12]}")
    assert kit.state.submissions[0].content == (folder / "submission.csv").read_bytes()
    row = kit.row(1)
    assert row["submission_ref"] == "50000001" and row["submission_status"] == "COMPLETE"
    assert float(row["public_score"]) == pytest.approx(0.8612)

    code, out, err = kit.run("scores")
    assert code == 0, err
    assert "v1" in out and "0.86120" in out and "best public score:  v1" in out and "best validation:    v1" in out
    code, out, err = kit.run("scores", "--csv", "--plot", "scores.png")
    assert code == 0 and out.splitlines()[0].startswith("mark,version,ref,status,public,private,gap,val_acc")
    assert (kit.repo / "scores.png").read_bytes()[:4] == b"\x89PNG"
    no_secret(out, err)

    import pandas as pd

    frame = pd.read_csv(kit.ledger)
    assert list(frame["version"]) == [1] and frame.loc[0, "public_score"] == pytest.approx(0.8612)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cli_help_and_offline_commands_need_no_kaggle():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "lorakit", "--help"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0 and "push" in result.stdout and "scores" in result.stdout
    code = (
        "import sys, lorakit.cli, lorakit.run, lorakit.sweep, lorakit.planner, lorakit.remote;"
        "lorakit.cli.build_parser(); print('kaggle' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
    code = "import sys, lorakit.cli; lorakit.cli.build_parser('status'); print(sorted(set(sys.modules) & {'lorakit.sweep', 'numpy'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr  # a command imports its own module, not every command's
    for command in ("check", "push", "status", "logs", "pull", "submit", "scores", "leaderboard", "compare", "quota",
                    "validate", "plan", "run"):
        result = subprocess.run([sys.executable, "-m", "lorakit", command, "--help"], capture_output=True, text=True,
                                env=env, timeout=60)
        assert result.returncode == 0 and "usage: lorakit " + command in result.stdout


def test_every_json_output_parses_and_has_its_keys(kit, tmp_path):
    code, out, err = kit.run("run", "--submit", "-m", "json", "--json")
    assert code == 0, err
    data = one_document(out)
    assert set(data) == {"version", "push", "status", "pull", "submission"}
    assert set(data["push"]) >= {"version", "status", "kernel", "url", "config_hash", "trainable_params",
                                 "param_budget", "overrides", "accelerator", "predict_from", "notes", "dry_run"}
    assert data["status"] == {"status": "COMPLETE", "failure_message": None, "status_named": True}
    assert set(data["pull"]) == {"version", "status", "folder", "files", "val_accuracy", "run_minutes", "device",
                                 "metrics", "warnings"}
    assert data["submission"]["ref"] == 50000001 and data["submission"]["score"]["public_score"] == 0.8612
    assert "pushed v1" in err and "scored: public" in err  # progress on stderr

    expected = {
        ("push", "-m", "two", "--set", "lora_r=4"): {"version", "status", "kernel", "url", "config_hash",
                                                      "trainable_params", "param_budget", "overrides",
                                                      "accelerator", "predict_from", "notes", "dry_run",
                                                      "build_dir", "session_timeout_s"},
        ("status",): {"version", "status", "failure_message", "status_named", "push_problem"},
        ("status", 2, "--wait"): {"version", "status", "failure_message", "status_named", "push_problem"},
        ("pull", 2): {"version", "status", "folder", "files", "val_accuracy", "run_minutes", "device", "metrics",
                      "warnings"},
        ("submit", 2, "--wait"): {"version", "ref", "remaining_today", "notes", "score"},
        ("scores",): {"submissions", "best_public", "best_validation", "unrecorded", "not_submitted", "unsettled",
                      "not_candidates", "selected", "selection_warning", "noise"},
        ("leaderboard", "--top", "2"): {"competition", "rows", "me", "download", "download_board"},
        ("quota",): {"used_hours", "reserved_hours", "total_hours", "left_hours", "minimum_hours", "refresh", "runs"},
        ("compare", 1, 2): {"a", "b", "config_diff", "where_diff", "config_reason", "paired", "paired_reason",
                            "test", "test_reason", "environment_warnings"},
        ("validate", "submissions/v1/submission.csv"): {"file", "valid", "rows"},
        ("check", "--set", "lora_r=4"): {"trainable_params", "param_breakdown", "within_budget", "config_hash",
                                         "param_budget", "overrides", "usable_positions"},
        ("plan", "--head", "roberta", "--targets", "query", "--ranks", "8", "--layers", "all"):
            {"budget", "layers", "enumerated", "fitting", "evidence_source", "configs"},
    }
    for argv, keys in expected.items():
        code, out, err = kit.run(*argv, "--json")
        assert code == 0, (argv, err)
        assert set(one_document(out)) == keys, argv
    scores = json.loads(kit.run("scores", "--json")[1])
    assert scores["best_public"] in (1, 2) and {s["version"] for s in scores["submissions"]} == {1, 2}
    assert set(scores["submissions"][0]) >= {"ref", "status", "public_score", "private_score", "version", "gap",
                                             "val_accuracy", "overrides", "message"}
    board = json.loads(kit.run("leaderboard", "--json")[1])
    assert board["me"]["mine"] is True and set(board["rows"][0]) == {"rank", "team_id", "team_name", "score",
                                                                     "date", "mine"}
    compare = json.loads(kit.run("compare", 1, 2, "--json")[1])
    assert set(compare["test"]["per_class"]["World"]) == {"a_rows", "b_agrees", "b_rows", "a_agrees"}

    # a failure is one document too, with the same exit code
    kit.state.status_script = ["RUNNING", "ERROR"]
    kit.state.failure_message = "CUDA out of memory"
    push(kit, "--again")  # v1 ran this config to COMPLETE
    code, out, err = kit.run("status", 3, "--wait", "--json")
    assert code == 3 and one_document(out) == {"version": 3, "status": "ERROR", "failure_message": "CUDA out of memory", "status_named": True,
                                               "push_problem": None, "error": "v3 ended ERROR: CUDA out of memory", "exit_code": 3}
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,Label\n0,9\n")
    code, out, err = kit.run("validate", bad, "--rows", "1", "--json")
    assert code == 1 and one_document(out)["valid"] is False and "Label" in one_document(out)["error"]
    code, out, err = kit.run("scores", "--json", "--csv")
    assert code == 2 and one_document(out) == {"error": "choose one of --csv and --json", "exit_code": 2}


@pytest.mark.parametrize("argv, error", [
    (("status", "--json", "--bogus"), "unrecognized arguments: --bogus"),
    (("push", "--json"), "the following arguments are required: -m/--message"),
    (("check", "--json", "--set"), "argument --set: expected one argument"),
])
def test_command_line_errors_under_json_print_one_document(kit, argv, error):
    code, out, err = kit.run(*argv)
    assert code == 2 and one_document(out) == {"error": error, "exit_code": 2}
    assert "usage: lorakit" in err and f"error: {error}" in err
    code, out, err = kit.run(*[a for a in argv if a != "--json"])
    assert code == 2 and out == ""


def test_each_command_registers_its_flags_beside_its_handler_with_help():
    import argparse

    from lorakit import cli, console

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(commands) == [name for name, _module in cli.COMMANDS]
    modules = dict(cli.COMMANDS)
    assert set(console.REGISTRY) == set(modules)  # a command registered but not listed would never be offered
    for name, subparser in commands.items():
        handler = subparser.get_default("func")  # beside its data, in the module COMMANDS names
        assert handler.__name__ == f"cmd_{name}" and handler.__module__ == f"lorakit.{modules[name]}"
        for action in subparser._actions:
            assert action.help and action.help.strip(), (name, action.dest)
    json_commands = {name for name, sub in commands.items() if any("--json" in a.option_strings for a in sub._actions)}
    assert json_commands == set(commands)
    push_flags = {a.dest for a in commands["push"]._actions}
    assert push_flags <= {a.dest for a in commands["run"]._actions}


@pytest.mark.slow
def test_a_closed_stdout_ends_quietly(kit):
    read, write = os.pipe()
    os.close(read)  # the reader has gone before anything is written, as with `| head -1` on a long output
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "lorakit", "plan", "--head", "roberta", "--targets", "query",
                           "--ranks", "8", "--layers", "all"], cwd=kit.repo, env=env, stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("argv", [("scores", "--plot", "{file}/plot.png"), ("leaderboard", "--download", "{file}/lb")])
def test_an_unwritable_output_path_is_refused_before_any_network_call(kit, argv):
    (kit.repo / "notes.txt").write_text("a file, not a folder\n")
    argv = [a.format(file="notes.txt") for a in argv]
    code, out, err = kit.run(*argv)
    assert code == 2 and error_line(err) == f"lorakit: error: {argv[1]} {argv[2]}: notes.txt is not a folder"
    assert not kit.state.requests
    code, out, err = kit.run(*argv, "--json")
    assert code == 2 and one_document(out)["exit_code"] == 2


def test_a_full_disk_outside_a_send_is_one_line_and_the_ledger_is_kept(kit, monkeypatch):
    """A ledger write that meets a full disk (here: while status settles the version's row) is the machine's
    fault: one line naming it and what to do, exit 1, the ledger as it was; never an internal error."""
    push(kit)
    before = kit.ledger.read_bytes()
    with monkeypatch.context() as mp:
        full_disk_after(mp, kit, "SaveKernel")
        code, out, err = kit.run("status", "1")
    line = error_line(err)
    assert code == 1 and "No space left on device" in line and "free some space" in line
    assert "internal error" not in err and kit.ledger.read_bytes() == before


@pytest.mark.parametrize("argv", [("status", "--wait", "--timeout", "0"), ("submit", "1", "--wait", "--timeout", "-5")])
def test_a_timeout_that_is_not_positive_is_refused_before_any_call(kit, argv):
    push(kit)
    before = len(kit.state.requests)
    code, out, err = kit.run(*argv)
    assert code == 2 and error_line(err).endswith("--timeout must be a positive number of seconds")
    assert len(kit.state.requests) == before and not kit.state.submissions


@pytest.mark.parametrize("argv, code, words", [
    (("status", "seven"), 2, "a version is a positive kernel version number"),
    (("logs", "0"), 2, "a version is a positive kernel version number"),
    (("pull", "v-1"), 2, "a version is a positive kernel version number"),
    (("submit", "x"), 2, "a version is a positive kernel version number"),
    (("report", "--versions", "x"), 2, "a version is a positive kernel version number"),
    (("status", "9"), 7, "404"),
    (("pull", "9"), 7, "404"),
    (("submit", "9"), 7, "submissions/v9/submission.csv does not exist"),
    (("compare", "1", "9"), 7, "v9 is not a version of"),
    (("report", "--versions", "9"), 7, "v9 is not in the ledger"),
    (("sweep", "--resume", "sw-000000"), 7, "no sweep sw-000000"),
    (("validate", "missing.csv"), 7, "missing.csv does not exist"),
    (("push", "-m", "again"), 6, "--again"),
])
def test_one_exit_code_rule_for_every_command(kit, argv, code, words):
    """The rule of docs/cli.md's table: 2 a command line that cannot be used, 6 refused before sending (the message
    names the fix or the flag), 7 a version, sweep or file that does not exist; each before anything is sent."""
    push(kit)
    kit.run("status", "1", "--wait")
    kit.run("pull", "1")
    sent = len(kit.state.calls("SaveKernel")), len(kit.state.calls("CreateSubmission"))
    got, out, err = kit.run(*argv)
    assert got == code and words in error_line(err), err
    assert (len(kit.state.calls("SaveKernel")), len(kit.state.calls("CreateSubmission"))) == sent


# ----------------------------------------------------------------------------------------------- issue 22
@pytest.mark.parametrize("argv", [
    ("status", 1, "--wait", "--timeout", "inf"), ("status", 1, "--timeout", "inf"), ("logs", 1, "--follow", "--timeout",
    "inf"), ("submit", 1, "--timeout", "inf"), ("run", "-m", "x", "--timeout", "inf"), ("run", "-m", "x",
    "--score-timeout", "inf"), ("sweep", "--grid", "lora_r=2,4", "--timeout", "inf"), ("status", 1, "--wait",
    "--timeout", "nan"),
])
def test_every_timeout_is_a_finite_number_of_seconds(kit, argv):
    push(kit)
    before = len(kit.state.requests)
    code, out, err = kit.run(*argv)
    line = error_line(err)
    assert code == 2 and "timeout must be a" in line and "number of seconds" in line, err
    assert len(kit.state.requests) == before and kit.ledger.read_text().count("\n") == 2


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what a terminal acts on: never printed, but for \t and \n


def test_ledger_and_kaggle_text_reach_the_terminal_without_control_characters(kit):
    evil = "fine\x1b]0;pwned\x07\x1b[2J\r\nover\x9b31m\x01"  # in a ledger from git: -m refuses it
    code, out, err = kit.run("push", "-m", evil)
    assert code == 2 and "-m holds a control character" in error_line(err) and not kit.state.requests
    push(kit, message="fine")
    rows = kit.rows()
    rows[0]["message"] = evil
    with open(kit.ledger, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    kit.state.leaderboard.append({"teamId": 13, "teamName": "evil\x1b[2J team", "score": "0.5"})
    kit.state.fail("GetKernelSessionStatus", 400, message="bad\x1b[2J\rrequest")
    for argv in (("versions",), ("versions", "--csv"), ("status", 1), ("leaderboard",)):
        code, out, err = kit.run(*argv)
        assert code in (0, 1) and not CONTROL.search(out + err.replace("\n", "")), (argv, out, err)
        assert "internal error" not in err
    code, out, err = kit.run("versions")
    assert "fine over?31m?" in out, err
    code, out, err = kit.run("versions", "--json")
    assert json.loads(out)["versions"][0]["message"] == evil  # exact JSON: every control character escaped


def test_the_temporary_files_of_a_dead_command_are_removed_by_the_next_one(kit, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        push(kit)
        subs = kit.repo / "submissions"
        (subs / "sweeps").mkdir()
        gone = [subs / f".ledger.csv.pid{dead}-a1b2c3.tmp", subs / "sweeps" / f".sw-1a2b3c.json.pid{dead}-q9.tmp",
                subs / f".v1.partial-pid{dead}-x7", subs / f".v1.old-pid{dead}-y8", scratch / f"lorakit-build-pid{dead}-z",
                scratch / f"lorakit-sync-pid{dead}-w"]
        kept = [subs / f".ledger.csv.pid{live.pid}-k.tmp", scratch / f"lorakit-build-pid{live.pid}-k",
                scratch / f"other-pid{dead}-x", subs / "notes.tmp"]
        for path in gone + kept:
            if "partial" in path.name or "old" in path.name or path.parent == scratch:
                (path / "adapter").mkdir(parents=True)
                (path / "adapter" / "kit.json").write_text("{}")
            else:
                path.write_text("half written")
        code, out, err = kit.run("versions")
        assert code == 0, err
        assert [p for p in gone if p.exists()] == [] and [p for p in kept if not p.exists()] == []
    finally:
        live.kill()


@pytest.mark.slow  # lorakit processes, each loading the kernel
def test_a_killed_pull_or_push_leaves_nothing_behind_after_the_next_command(kit, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))  # the killed processes' temp folder too
    push(kit)
    assert kit.run("status", 1, "--wait")[0] == 0
    for argv, method, left in ((("pull", 1), "/files/", kit.repo / "submissions" / ".v1.partial-pid*"),
                               (("push", "-m", "killed", "--set", "lora_r=4"), "SaveKernel", scratch / "lorakit-build-pid*")):
        held = kit.state.hold(method)
        proc = lorakit_started(kit, *argv)
        assert held.seen.wait(60)
        proc.kill()
        proc.wait(timeout=60)
        held.release()
        assert list(left.parent.glob(left.name)), argv  # what the killed command was writing
        code, out, err = kit.run("versions")
        assert code == 0 and not list(left.parent.glob(left.name)), err
