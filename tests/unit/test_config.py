from __future__ import annotations

import pytest

from dbparallel.cli import main
from dbparallel.config import (
    ConfigError,
    config_hash,
    describe,
    identity_diff,
    load_config,
    to_dict,
)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.depth=10", "model.depth"),  # 10 layers do not split into 4 blocks
        ("model.blocks=0", "model.blocks"),
        ("model.blocks=x", "model.blocks"),
        ("noise.sigma_min=100", "noise.sigma_min"),
        ("noise.gamma=-0.1", "noise.gamma"),
        ("train.steps=0", "train.steps"),
        ("train.nonfinite=ignore", "train.nonfinite"),
        ("train.compile_mode=fastest", "train.compile_mode"),
        ("sample.solver=rk4", "sample.solver"),
        ("model.bogus=1", "model.bogus"),
        ("task=vae", "task"),
        ("debug.kill_block=7", "debug.kill_block"),
        ("data.decode_threads=-1", "data.decode_threads"),
        ("run.name=' x'", "run.name"),
        ("run.name=../x", "run.name"),  # runs/../x: outside runs/
        ("run.name=.", "run.name"),  # runs/.: among the other runs
        ("run.name=a/b", "run.name"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([], [override])
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_a_key_set_in_a_recipe_names_the_last_file_that_sets_it(tmp_path) -> None:
    """The recipe where the fault is, when several are merged; an override on the command
    line is the user's own, and a misspelled key gets the schema's nearest one."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("model:\n  depth: 5\n  dpeth: 2\n")
    b.write_text("model:\n  depth: 7\n")
    with pytest.raises(ConfigError) as err:
        load_config([b, a])
    assert str(err.value) == (f"{a}: model.dpeth: unknown key (did you mean model.depth? see "
                              f"`dbparallel train --help-config` for the keys)")
    a.write_text("train:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=rf"^{b}: model.depth: 7 layers do not split "):
        load_config([a, b])  # a value the schema's checks refuse
    with pytest.raises(ConfigError, match=r"^model.depth: 6 layers do not split"):
        load_config([a, b], ["model.depth=6"])
    with pytest.raises(ConfigError, match=r"^model.depth: 7 layers do not split equally into "
                                          r"model.blocks=2"):  # the other side, given here
        load_config([a, b], ["model.blocks=2"])
    with pytest.raises(ConfigError, match=r"^model.dpeth: unknown key \(did you mean "
                                          r"model.depth\?"):
        load_config([a], ["model.dpeth=2"])
    b.write_text("task: vae\n")  # a top-level key
    with pytest.raises(ConfigError, match=rf"^{b}: task: got 'vae'; allowed: "):
        load_config([a, b])
    b.write_text("model:\n  depth: ${nope}\n")  # an interpolation: still one line
    with pytest.raises(ConfigError, match=r"model.depth: Interpolation key 'nope' not found"):
        load_config([b])
    a.write_text("model:\n  depth: 4\n")  # the file whose value does not resolve
    with pytest.raises(ConfigError, match=rf"^{b}: model.depth: Interpolation key 'nope'"):
        load_config([a, b])
    b.write_text("train:\n  block_steps: [1, 2]\n")  # the command line's list is at fault
    with pytest.raises(ConfigError, match=r"^train.block_steps"):
        load_config([b], ["train.block_steps=[1, 2, 3]"])


@pytest.mark.parametrize(("override", "meant"), [
    ("train.ema=0.9", "train.ema_decay"), ("run.directory=x", "run.dir"),
    ("train.batchsize=3", "train.batch_size")])
def test_a_key_cut_short_or_run_on_is_told_the_key_meant(override: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{override.split('=')[0]}: unknown key \(did you "
                                          rf"mean {meant}\? see "):
        load_config([], [override])


def test_spaces_around_an_override_s_key_are_not_part_of_it() -> None:
    assert load_config([], ["train.steps = 7", " model.blocks =2"]).train.steps == 7
    with pytest.raises(ConfigError, match=r"^train.steps: must be >= 1, got 0$"):
        load_config([], ["train.steps =0"])


def test_allowed_values_are_listed() -> None:
    with pytest.raises(ConfigError, match="allowed: euler, heun"):
        load_config([], ["sample.solver=rk4"])


def test_yaml_then_overrides(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  blocks: 3\n  depth: 9\ntrain:\n  steps: 7\n")
    cfg = load_config([recipe], ["train.steps=11"])
    assert (cfg.model.blocks, cfg.model.depth, cfg.model.layers_per_block) == (3, 9, 3)
    assert cfg.train.steps == 11


def test_missing_file_and_bad_override() -> None:
    with pytest.raises(ConfigError, match=r"not found: /nonexistent.yaml$"):
        load_config(["/nonexistent.yaml"])
    # on the command line an item without "=" is a recipe: a key without its value is told so
    with pytest.raises(ConfigError, match=r"not found: train.steps \(an override needs its "
                                          r"value: train.steps=...\)"):
        load_config(["train.steps"])
    with pytest.raises(ConfigError, match=r"not found: my.recipe$"):  # no section: a file
        load_config(["my.recipe"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config([], ["model.blocks"])


def test_blocks_that_do_not_divide_the_depth_are_told_the_ones_that_do() -> None:
    with pytest.raises(ConfigError, match=r"^model.depth: 24 layers do not split equally into "
                       r"model.blocks=5; use a multiple of 5, or model.blocks of 1, 2, 3, 4, 6, "
                       r"8, 12, 24$"):
        load_config([], ["model.depth=24", "model.blocks=5"])


def test_two_recipes_that_disagree_are_both_named(tmp_path) -> None:
    """The depth of one recipe and the blocks of another: the one that set the blocks was
    left out, though it is the one that changed."""
    depth, blocks = tmp_path / "depth.yaml", tmp_path / "blocks.yaml"
    depth.write_text("model:\n  depth: 2\n")
    blocks.write_text("model:\n  blocks: 3\n")
    with pytest.raises(ConfigError, match=f"^{depth} and {blocks}: model.depth: 2 layers do "
                                          f"not split equally into model.blocks=3"):
        load_config([depth, blocks])
    both = tmp_path / "both.yaml"
    both.write_text("model:\n  depth: 2\n  blocks: 3\n")
    with pytest.raises(ConfigError, match=f"^{both}: model.depth: 2 layers"):
        load_config([depth, both])


def test_the_default_run_name_names_the_data_and_the_task() -> None:
    assert load_config().run_dir == "runs/digits-dit"
    text = load_config([], ["task=ar", "data.source=shakespeare"])
    assert (text.run.name, text.run_dir) == ("shakespeare-ar", "runs/shakespeare-ar")
    assert load_config([], ["task=vit"]).run.name == "digits-vit"
    assert load_config([], ["task=vit", "run.name=mine"]).run_dir == "runs/mine"
    # data of a path are named by it: two data sets of one source get two run directories
    named = [load_config([], ["data.source=parquet", f"data.path={path}"]).run.name
             for path in ("/data/pets", "s3://b/imagenet64/", "/d/my data!.parquet",
                          "/data/pets.v2", "/d/.parquet")]
    assert named == ["pets-dit", "imagenet64-dit", "my-data-dit", "pets.v2-dit", "parquet-dit"]
    assert load_config([], ["task=ar", "data.source=text", "data.path=notes.jsonl.gz"]
                       ).run.name == "notes-ar"


def test_a_recipe_given_other_data_names_the_run_after_them(tmp_path) -> None:
    """A recipe's run.name names its own task and data: another task or a corpus given in
    their place, by an override or a later recipe, names the run as it would with no recipe,
    unless run.name is given."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "jobs" / "ar_shakespeare_tiny.yaml"
    assert load_config([recipe], ["train.steps=3"]).run_dir == "runs/ar-shakespeare-tiny"
    assert load_config([recipe], ["data.source=shakespeare"]).run.name == "ar-shakespeare-tiny"
    mine = ["data.source=text", "data.path=/data/corpus/"]
    assert load_config([recipe], mine).run_dir == "runs/corpus-ar"
    assert load_config([recipe], [*mine, "run.name=mine"]).run_dir == "runs/mine"
    later = tmp_path / "notes.yaml"
    later.write_text("data:\n  source: text\n  path: /data/notes.jsonl\n")
    assert load_config([recipe, later]).run.name == "notes-ar"
    assert load_config([recipe], ["task=mdm"]).run_dir == "runs/shakespeare-mdm"
    assert load_config([recipe], ["task=mdm", "run.name=mine"]).run.name == "mine"
    assert load_config([recipe], ["task=ar"]).run.name == "ar-shakespeare-tiny"
    tiny = recipe.parent / "tiny_cpu.yaml"  # names no task: the default, dit, is its task
    assert load_config([tiny], ["task=dit"]).run.name == "tiny-cpu"
    assert load_config([tiny], ["task=vit"]).run.name == "digits-vit"


def test_a_run_in_the_recipe_s_own_directory_is_named_to_a_run_named_apart(
        tmp_path, monkeypatch, caplog) -> None:
    # trained there before runs of other data or another task were named apart
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "jobs" / "ar_shakespeare_tiny.yaml"
    monkeypatch.chdir(tmp_path)
    mine = ["data.source=text", "data.path=/data/corpus/"]
    with caplog.at_level("WARNING"):
        load_config([recipe], mine)  # no run there: nothing said
    assert "holds a run" not in caplog.text
    (tmp_path / "runs" / "ar-shakespeare-tiny").mkdir(parents=True)
    (tmp_path / "runs" / "ar-shakespeare-tiny" / "config.yaml").write_text("task: ar\n")
    with caplog.at_level("WARNING"):
        assert load_config([recipe], mine).run_dir == "runs/corpus-ar"
    assert "runs/ar-shakespeare-tiny holds a run: if it is this one, give " \
        "run.dir=runs/ar-shakespeare-tiny to resume it" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a run.dir given, or the recipe's own data: nothing
        load_config([recipe], [*mine, "run.dir=elsewhere"])
        load_config([recipe], ["train.steps=3"])
    assert "holds a run" not in caplog.text


def test_identity_ignores_training_length() -> None:
    a, b = load_config(), load_config([], ["train.steps=5"])
    assert config_hash(a) == config_hash(b)
    c = load_config([], ["model.blocks=2"])
    assert config_hash(a) != config_hash(c)
    assert identity_diff(to_dict(a), to_dict(c)) == ["model.blocks"]


def test_help_config_shows_the_values_of_the_recipes_given(capsys) -> None:
    from pathlib import Path

    tiny = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
    assert main(["train", str(tiny), "model.depth=4", "--help-config"]) == 0
    lines = [line.split("  # ")[0] for line in capsys.readouterr().out.splitlines()]
    assert "model.blocks=2" in lines and "model.depth=4" in lines  # not the defaults, 4 and 8
    assert main(["train", "--local", "--help-config"]) == 0
    assert "runtime.local=True" in [line.split("  # ")[0]
                                    for line in capsys.readouterr().out.splitlines()]
    assert main(["train", "--help-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train.steps=1500  # optimizer steps per block" in lines  # what each key means
    assert any(line.startswith("runtime.gpus_per_block=0.0  # GPUs per block actor (each "
                               "replica; fractions share a card); 0 = CPU") for line in lines)


def test_help_config_of_a_config_that_is_not_complete_yet(capsys) -> None:
    # what a user asks while setting a text task up: the keys, with what it holds so far,
    # and what is still missing
    assert main(["train", "task=ar", "data.seq_len=64", "--help-config"]) == 0
    out, err = capsys.readouterr()
    lines = [line.split("  # ")[0] for line in out.splitlines()]
    assert "task=ar" in lines and "data.seq_len=64" in lines and "data.source=digits" in lines
    assert err.strip() == ("dbparallel: this config would not train yet: data.source: task=ar "
                           "reads text: shakespeare, text or parquet, got 'digits'")
    assert main(["train", "model.depth=x", "--help-config"]) == 2  # not even of its type
    assert main(["train", "train.steps", "--help-config"]) == 2  # the first error, as it was
    assert "(an override needs its value: train.steps=...)" in capsys.readouterr().err
    assert main(["train", "task=ar", "--local", "--help-config"]) == 0
    assert "runtime.local=True" in [line.split("  # ")[0]
                                    for line in capsys.readouterr().out.splitlines()]


def test_every_key_has_a_meaning_from_the_schema() -> None:
    from dbparallel.config import notes

    meaning = notes()
    assert sorted(meaning) == sorted(k for k, _ in describe())
    assert all(meaning.values()), [k for k, v in meaning.items() if not v]
    # a comment that runs on after its field's line stays with that field
    assert meaning["train.compile"].endswith("needs a C++ compiler)")
    assert meaning["train.block_steps"].startswith("optimizer steps of each block")
    # ... also where a blank line (the end of its section) follows it
    assert meaning["metrics.port"].endswith("Ray picks the instance's")
    # no note is cut off mid-sentence (a continuation line lost)
    assert not [k for k, v in meaning.items() if v.rstrip()[-1] in ";,:("], meaning
    # nor runs on into a comment of a method below the fields (run.curves into
    # RunConfig.__post_init__'s)
    assert meaning["run.curves"].endswith("also where this is false)")


def test_describe_lists_every_leaf() -> None:
    keys = dict(describe())
    for key in ("model.blocks", "model.depth", "noise.sigma_min", "noise.sigma_max",
                "noise.P_mean", "noise.P_std", "noise.sigma_data", "noise.gamma",
                "train.steps", "train.batch_size", "run.dir", "run.seed"):
        assert key in keys
    assert keys["noise.P_mean"] == -1.2 and keys["model.blocks"] == 4


def test_cli_exit_code_2_on_config_error(capsys) -> None:
    assert main(["train", "model.depth=7"]) == 2
    err = capsys.readouterr().err
    assert "model.depth" in err and "Traceback" not in err


def test_a_run_stored_with_a_path_as_its_name_still_loads() -> None:
    """run.name=a/b trained before names were told from paths: its config.yaml reads back."""
    from dbparallel.config import from_dict, to_dict

    stored = to_dict(load_config())
    stored["run"]["name"] = "a/b"
    assert from_dict(stored).run.name == "a/b"


def test_a_stored_config_without_a_later_key_reads_as_it_trained() -> None:
    from dbparallel.config import from_dict, identity_diff, to_dict

    old = to_dict(load_config([], ["task=ar", "data.source=shakespeare"]))
    del old["model"]["ar_readout"]  # written before the key existed: it trained "direct"
    cfg = from_dict(old)
    assert cfg.model.ar_readout == "direct"
    assert identity_diff(old, to_dict(cfg)) == []  # its checkpoints still belong to it
    paper = load_config([], ["task=ar", "data.source=shakespeare", "model.ar_readout=paper"])
    assert identity_diff(old, to_dict(paper)) == ["model.ar_readout"]  # another network


# The identity keys of the first run directories (ar_readout, label_embedding and partition
# came later, with LEGACY_VALUES). Never add to this list: a key added to an identity section
# needs a LEGACY_VALUES entry, else every earlier run directory is refused.
FIRST_IDENTITY = {
    "data.channels", "data.image_size", "data.num_classes", "data.path", "data.seq_len",
    "data.shard_rows", "data.source", "data.tokenizer", "data.vocab_size", "data.window_shards",
    "model.blocks", "model.depth", "model.heads", "model.hidden", "model.loop_iterations",
    "model.mlp_ratio", "model.patch_size", "model.preset", "noise.P_mean", "noise.P_std",
    "noise.gamma", "noise.sigma_data", "noise.sigma_max", "noise.sigma_min", "noise.t_min",
    "run.seed", "task", "train.label_dropout", "train.objective"}


def test_every_identity_key_added_later_reads_old_configs_as_they_trained() -> None:
    from dbparallel.config import LEGACY_VALUES, from_dict, identity, identity_diff, to_dict

    current = to_dict(load_config([], []))
    later = set(identity(current)) - FIRST_IDENTITY
    assert later <= set(LEGACY_VALUES), f"no LEGACY_VALUES entry for {later - set(LEGACY_VALUES)}"
    old = to_dict(load_config([], []))
    for key in LEGACY_VALUES:  # a config stored before each of them
        section, leaf = key.split(".")
        del old[section][leaf]
    assert identity_diff(old, to_dict(from_dict(old))) == []


def test_block_steps() -> None:
    cfg = load_config([], ["model.blocks=3", "model.depth=3", "train.steps=7"])
    assert [cfg.train.steps_of(b) for b in range(3)] == [7, 7, 7] and cfg.train.max_steps == 7
    cfg = load_config([], ["model.blocks=3", "model.depth=3", "train.block_steps=[9,2,1]"])
    assert [cfg.train.steps_of(b) for b in range(3)] == [9, 2, 1] and cfg.train.max_steps == 9
    with pytest.raises(ConfigError, match="train.block_steps: needs one count per block"):
        load_config([], ["model.blocks=3", "model.depth=3", "train.block_steps=[9,2]"])
    with pytest.raises(ConfigError, match="train.block_steps: every count must be >= 1"):
        load_config([], ["model.blocks=2", "model.depth=2", "train.block_steps=[9,0]"])
    # how long blocks train is not what they are: a run directory takes other counts
    a, b = cfg, load_config([], ["model.blocks=3", "model.depth=3"])
    assert identity_diff(to_dict(a), to_dict(b)) == []


def test_noise_partition_key() -> None:
    assert load_config([], []).noise.partition == "equiprobable"
    assert load_config([], ["noise.partition=log_uniform"]).noise.partition == "log_uniform"
    with pytest.raises(ConfigError, match="noise.partition"):
        load_config([], ["noise.partition=uniform"])
    with pytest.raises(ConfigError, match="noise.partition: task=mdm"):
        load_config([], ["task=mdm", "data.source=shakespeare", "noise.partition=log_uniform"])
    old = to_dict(load_config([], []))
    del old["noise"]["partition"]  # written before the key: it was equiprobable
    assert identity_diff(old, to_dict(load_config([], []))) == []
    assert identity_diff(old, to_dict(load_config([], ["noise.partition=log_uniform"]))) == \
        ["noise.partition"]


def test_a_data_path_a_built_in_source_would_ignore_is_refused() -> None:
    """data.path without data.source used to train on the built-in digits, silently."""
    with pytest.raises(ConfigError, match=r"data.path: '/d/x.parquet' is not read: "
                                          r"data.source=digits is built in"):
        load_config([], ["data.path=/d/x.parquet"])
    assert load_config([], ["data.path=/d/x.parquet", "data.source=parquet"]).data.path


def test_a_text_task_with_a_data_path_and_no_data_source_says_which_source_reads_it() -> None:
    hint = "data.path is set: give data.source=text for a text file"
    for source in ([], ["data.source=fashion_mnist"]):
        with pytest.raises(ConfigError, match="^data.source: task=ar reads text") as err:
            load_config([], ["task=ar", "data.path=notes.jsonl", *source])
        assert hint in str(err.value) and "data.source=parquet for Parquet" in str(err.value)
    with pytest.raises(ConfigError, match="^data.source: task=ar reads text") as err:
        load_config([], ["task=ar"])  # no path: nothing to suggest
    assert hint not in str(err.value)


def test_prompt_and_continuation_are_tokens_checked_for_ar_and_looped_only() -> None:
    from dbparallel.config import notes

    text = ["data.source=shakespeare", "data.seq_len=64"]
    for task in (["task=ar"], ["task=looped", "model.blocks=1"]):
        with pytest.raises(ConfigError, match=r"^sample.gen_len: sample.prompt_len=32 \+ "
                                              r"sample.gen_len=64 must be <= data.seq_len=64"):
            load_config([], [*task, *text])
    assert load_config([], ["task=mdm", *text]).sample.gen_len == 64  # mdm reads neither
    meaning = notes()
    assert meaning["sample.prompt_len"].startswith("tokens of held-out text")
    assert "several characters with bpe" in meaning["sample.prompt_len"]
    assert meaning["sample.gen_len"].startswith("tokens generated")


def test_a_looped_config_without_model_blocks_takes_its_one_core(tmp_path, capsys) -> None:
    """task=looped takes only B = 1: left unset (the schema's default is 4), that is its B;
    given another, it is refused naming the value, and the other tasks keep the default."""
    text = ["data.source=shakespeare", "data.seq_len=64", "sample.prompt_len=16",
            "sample.gen_len=16"]
    assert load_config([], ["task=looped", *text]).model.blocks == 1
    assert load_config([], ["task=ar", *text]).model.blocks == 4
    recipe = tmp_path / "looped.yaml"
    recipe.write_text("task: looped\n")
    assert load_config([recipe], text).model.blocks == 1
    with pytest.raises(ConfigError, match=r"^model.blocks: must be 1 with task=looped \(one "
                                          r"weight-tied core\), got 4$"):
        load_config([], ["task=looped", "model.blocks=4", *text])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 200)
    assert main(["data", "check", str(corpus), "task=looped", "data.seq_len=64",
                 "sample.prompt_len=16", "sample.gen_len=16"]) == 0, capsys.readouterr().err
    assert "train: " in capsys.readouterr().out


def test_a_text_task_s_overlap_is_0_1_unless_its_config_sets_it(tmp_path) -> None:
    """The method's gamma for text is 0.1, twice the images' 0.05: a text task's config that
    does not set noise.gamma (in a recipe or an override) takes it; one that does keeps its
    value, and the image tasks keep the schema's."""
    text = ["data.source=shakespeare"]
    for task in ("mdm", "ar", "looped"):
        assert load_config([], [f"task={task}", *text]).noise.gamma == 0.1, task
        assert load_config([], [f"task={task}", *text, "noise.gamma=0.05"]).noise.gamma == 0.05
    recipe = tmp_path / "ar.yaml"
    recipe.write_text("task: ar\nnoise:\n  gamma: 0.0\n")
    assert load_config([recipe], text).noise.gamma == 0.0
    for task in ("vit", "dit"):
        assert load_config([], [f"task={task}"]).noise.gamma == 0.05


def test_a_recipe_that_is_not_a_yaml_mapping_is_named(tmp_path, capsys) -> None:
    broken, listed = tmp_path / "broken.yaml", tmp_path / "listed.yaml"
    broken.write_text("model:\n  blocks: [1, 2\n")
    listed.write_text("- model\n- train\n")
    assert main(["plan", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dbparallel: error: {broken} line 3: not valid YAML") and \
        len(err.splitlines()) == 1, err
    assert main(["plan", str(listed)]) == 2
    assert f"{listed}: a recipe is a mapping of keys" in capsys.readouterr().err


def test_list_and_empty_values_say_what_they_need(capsys) -> None:
    assert main(["plan", "train.block_steps=5"]) == 2
    assert "train.block_steps: expects a list, e.g. [600, 400]" in capsys.readouterr().err
    assert main(["plan", "model.blocks="]) == 2
    assert "model.blocks: needs a value (key=value)" in capsys.readouterr().err


def test_summary_numbers_print_counts_in_full() -> None:
    from dbparallel.cli_status import metric_text

    assert [metric_text("x", v) for v in (10000.0, 186.0, 0.9989, 0.0, 2.5e-05)] == \
        ["10,000", "186", "0.9989", "0", "2.5e-05"]


def test_a_recipe_not_found_is_told_what_was_meant(tmp_path, monkeypatch) -> None:
    """A run directory given as a recipe, a recipe named without its suffix, and a folder."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("task: dit\n")
    (tmp_path / "mine.yaml").write_text("train:\n  steps: 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(["run"])
    assert str(err.value) == ("config file not found: run (it is a run directory: give "
                              "run.dir=run, with the recipe and overrides it was trained with, "
                              "to resume it)")
    with pytest.raises(ConfigError, match=r"^config file not found: mine \(did you mean "
                                          r"mine.yaml\?\)$"):
        load_config(["mine"])
    with pytest.raises(ConfigError, match=r"^config file not found: \. \(it is a folder: "
                                          r"give a YAML recipe\)$"):
        load_config(["."])
    long = "a" * 300 + ".yaml"  # no file name is that long: not found, not an OSError
    with pytest.raises(ConfigError, match=rf"^config file not found: {long}$"):
        load_config([long])


def test_an_unknown_option_shows_its_command_s_usage(capsys) -> None:
    from dbparallel.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["train", "jobs/tiny_cpu.yaml", "--lcoal"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dbparallel train [-h] [--local]")
    assert err.rstrip().endswith("dbparallel train: error: unrecognized arguments: --lcoal")
