"""Forms of the browser UI. They parse and validate input; services do the writing."""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from datasets_app.services import INPUT_TEXT_ROLES, lacks_text_role
from evaluation.metrics.catalog import METRICS
from projects.models import Comparison, Role, Split, TaskType
from training.runtime.config import TEXT_GENERATING_KINDS

# The training kind a project's task type starts from (the launch form's default kind).
KIND_FOR_TASK_TYPE: dict[str, str] = {
    TaskType.CLASSIFICATION: "classification",
    TaskType.GENERATION: "sft_causal",
    TaskType.SUMMARIZATION: "seq2seq",
    TaskType.TRANSLATION: "seq2seq",
    TaskType.QA: "qa",
}
# The architecture each training kind is best started from: an encoder for classification, QA
# and masked LM, a decoder for causal LM, an encoder-decoder for seq2seq. It chooses defaults
# (the preset family, a registered base), never refuses a choice.
ARCHITECTURE_FOR_KIND: dict[str, str] = {
    "classification": "encoder",
    "qa": "encoder",
    "pretrain_mlm": "encoder",
    "pretrain_clm": "decoder",
    "sft_causal": "decoder",
    "seq2seq": "encoder-decoder",
}
# Config ``model_type`` values of pretrained bases, by architecture.
MODEL_TYPES: dict[str, set[str]] = {
    "encoder": {
        "bert",
        "roberta",
        "distilbert",
        "electra",
        "deberta",
        "deberta-v2",
        "albert",
        "xlm-roberta",
        "mpnet",
        "camembert",
        "modernbert",
    },
    "decoder": {
        "gpt2",
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gpt_neox",
        "opt",
        "phi",
        "phi3",
        "gemma",
        "gemma2",
        "gptj",
        "bloom",
        "falcon",
    },
    "encoder-decoder": {"t5", "mt5", "bart", "mbart", "marian", "pegasus"},
}
# Split names in order of preference for each use; the first present wins.
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("validation", "dev", "val")
EVALUATE_SPLITS = ("test", "validation", "dev", "val")
NO_TEXT_NOTE = (
    f"This version has no text column (none has one of the roles {', '.join(INPUT_TEXT_ROLES)}): "
    "map one on the version page first."
)


def split_names(version) -> list[str]:
    """The names of a version's splits, in the order they were made."""
    return [s.name for s in version.splits.all()]


def default_split(names: list[str], prefer: tuple[str, ...], *, else_first: bool) -> str:
    """The first of ``prefer`` that ``names`` holds; else the first split (``else_first``) or
    none (the whole version, or no eval split)."""
    for name in prefer:
        if name in names:
            return name
    return names[0] if names and else_first else ""


def lacks_text(version) -> bool:
    """Whether ``version`` has no column with an input-text role."""
    return lacks_text_role(version.column_roles)


def base_fits_kind(base_model, kind: str) -> bool:
    """Whether a registered base model's architecture suits ``kind`` (a default, not a rule)."""
    model_type = (
        base_model.model_type or (base_model.config or {}).get("model_type") or ""
    ).lower()
    return model_type in MODEL_TYPES.get(ARCHITECTURE_FOR_KIND.get(kind, ""), set())


def default_family(presets: dict, kind: str) -> str:
    """The first preset family built for ``kind`` with the architecture that suits it."""
    suits = [name for name, p in presets.items() if kind in p.get("kinds", [kind])]
    best = [n for n in suits if presets[n].get("architecture") == ARCHITECTURE_FOR_KIND.get(kind)]
    return (best or suits or list(presets) or [""])[0]


def _condition(field: str, values) -> str:
    """A ``data-show-when`` condition for frontend/static/frontend/forms.js."""
    return f"{field}={','.join(str(v) for v in values)}"


class SplitSelect(forms.Select):
    """A select of a version's splits that forms.js refills when the version changes."""


def _split_field(*, label: str, blank: str, help_text: str = "") -> forms.CharField:
    # A CharField with a select: the choices depend on the version chosen in the same form, so
    # the form's clean() checks the value against that version (with a message naming it).
    return forms.CharField(
        required=False,
        label=label,
        help_text=help_text,
        widget=SplitSelect(attrs={"data-blank": blank}),
    )


def _set_split_choices(
    field: forms.Field, names: list[str], *, source: str, prefer, else_first: bool
) -> None:
    field.widget.choices = [("", field.widget.attrs["data-blank"]), *[(n, n) for n in names]]
    field.widget.attrs.update(
        {
            "data-splits-from": source,
            "data-prefer": ",".join(prefer),
            "data-prefer-first": "true" if else_first else "false",
        }
    )


def _version_info(versions) -> tuple[dict, str]:
    """(pk -> version, the JSON map of pk -> split names that forms.js reads)."""
    by_pk = {str(v.pk): v for v in versions}
    return by_pk, json.dumps({pk: split_names(v) for pk, v in by_pk.items()})


def _default_version(versions) -> str:
    """The newest version with splits (made to be trained on), else the first listed."""
    versions = list(versions)
    with_splits = [v for v in versions if split_names(v)]
    chosen = max(with_splits, key=lambda v: (v.created_at, v.pk)) if with_splits else None
    chosen = chosen or (versions[0] if versions else None)
    return str(chosen.pk) if chosen else ""


def _check_split(form: forms.Form, field: str, version, value: str) -> None:
    """A field error when ``version`` has no split ``value`` (the model's one check), shown
    with the form's other errors."""
    problem = version.missing_split(value)
    if problem:
        form.add_error(field, problem)


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True)

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)


class MemberAddForm(forms.Form):
    user = forms.CharField(max_length=150, label="Username or email")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ENGINEER)


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=120)
    slug = forms.SlugField(
        max_length=80,
        required=False,
        help_text="Short id used in URLs; made from the name if empty.",
    )
    task_type = forms.ChoiceField(choices=TaskType.choices)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    problem_statement = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
        help_text="What the model must do, for whom, and why it matters.",
    )


class ProjectCreateForm(ProjectForm):
    team = forms.ChoiceField(choices=())

    field_order = ("team", "name", "slug", "task_type", "description", "problem_statement")

    def __init__(self, *args, teams=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [(str(t.pk), t.name) for t in teams]


class GoalForm(forms.Form):
    metric = forms.ChoiceField(choices=())
    comparison = forms.ChoiceField(
        choices=[("", "default for the metric"), *Comparison.choices], required=False
    )
    target = forms.FloatField(help_text="Fractions for scores: 0.85 means 85%.")
    split = forms.ChoiceField(choices=Split.choices, initial=Split.TEST)
    deadline = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, task_type: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        metrics = [m for m in METRICS.values() if task_type is None or task_type in m.tasks]
        self.fields["metric"].choices = [(m.name, f"{m.label} ({m.name})") for m in metrics]


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'CI pipeline'.")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, help_text="Leave empty for a token that does not expire."
    )


FILE_FORMAT_CHOICES = [
    ("", "from the file name"),
    ("csv", "CSV"),
    ("tsv", "TSV"),
    ("json", "JSON"),
    ("jsonl", "JSON Lines"),
    ("txt", "Plain text"),
    ("parquet", "Parquet"),
]


class UploadForm(forms.Form):
    """A file for a dataset: new (with a name) or a new version of an existing one."""

    name = forms.CharField(
        max_length=120,
        required=False,
        help_text="Name of the new dataset; left empty, it is named after the file.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    file = forms.FileField(
        help_text="CSV, TSV, JSON, JSONL, TXT or Parquet, optionally .gz compressed."
    )
    file_format = forms.ChoiceField(choices=FILE_FORMAT_CHOICES, required=False)
    encoding = forms.CharField(initial="utf-8", max_length=40)
    encoding_errors = forms.ChoiceField(
        choices=[("strict", "stop at invalid bytes"), ("replace", "replace invalid bytes")],
        initial="strict",
    )
    txt_mode = forms.ChoiceField(
        choices=[("lines", "one document per line"), ("chunks", "cut a corpus into chunks")],
        initial="lines",
        label="Plain text files",
    )
    column_roles = forms.CharField(
        required=False,
        label="Column roles (JSON)",
        help_text='Optional, e.g. {"text": "document", "target": "summary"}; '
        "inferred from column names otherwise.",
    )


class DataCardForm(forms.Form):
    source = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    license = forms.CharField(required=False, max_length=200)
    collection_method = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    consent = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    personal_data = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Personal data"
    )
    intended_use = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    limitations = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class CleanForm(forms.Form):
    recipe = forms.ChoiceField(choices=())
    num_proc = forms.IntegerField(initial=1, label="Processes")  # 1-16: CleanParams checks

    def __init__(self, *args, recipes=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["recipe"].choices = [(str(r.pk), r.name) for r in recipes]


class SplitForm(forms.Form):
    """Split by ratios (optionally stratified) or by the values of a column. The ratio fields
    show only while no column is chosen: a split by a column ignores them."""

    # Not required: hidden (and not sent) while splitting by a column; the split service says
    # what is missing when neither ratios nor a column are given.
    train = forms.FloatField(initial=0.8, min_value=0, max_value=1, required=False)
    validation = forms.FloatField(initial=0.1, min_value=0, max_value=1, required=False)
    test = forms.FloatField(initial=0.1, min_value=0, max_value=1, required=False)
    seed = forms.IntegerField(initial=42, required=False)
    strategy = forms.ChoiceField(
        choices=[
            ("random", "Random rows (shuffled by the seed)"),
            ("position", "By position: the first rows train, the last rows validate"),
        ],
        initial="random",
        required=False,
        label="Rows",
        help_text="By position keeps the file's order, as a text corpus is split.",
    )
    stratify_column = forms.ChoiceField(choices=(), required=False, label="Stratify by")
    by_column = forms.ChoiceField(choices=(), required=False, label="Or split by the values of")

    # A column with one of these names already says which split each row belongs to (as the
    # sentiment_poem.csv of the first project does): the form proposes splitting by it.
    SPLIT_COLUMN_NAMES = ("split", "fold", "subset", "partition")

    def __init__(self, *args, columns=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "—"), *[(c, c) for c in columns]]
        self.fields["stratify_column"].choices = choices
        self.fields["by_column"].choices = choices
        by_name = {c.lower(): c for c in columns}
        split_column = next((by_name[n] for n in self.SPLIT_COLUMN_NAMES if n in by_name), "")
        self.initial.setdefault("by_column", split_column)
        for name in ("train", "validation", "test", "seed", "stratify_column", "strategy"):
            self.fields[name].show_when = _condition("by_column", [""])


class TokenizerForm(forms.Form):
    """Train a tokenizer on a version. The default name follows the algorithm
    (``<dataset>-v<n>-wordpiece``): forms.js renames it when the algorithm changes, and the
    service names a tokenizer left without a name the same way."""

    name = forms.CharField(
        max_length=120,
        required=False,
        help_text="Left empty: named after the version and the algorithm.",
    )
    algorithm = forms.ChoiceField(
        choices=[
            ("bpe", "Byte-level BPE"),
            ("wordpiece", "WordPiece"),
            ("unigram", "Unigram"),
            ("char", "Characters (small corpora)"),
        ]
    )
    # Bounds are checked once, by the runtime's TokenizerParams (the service calls it).
    vocab_size = forms.IntegerField(initial=8000)
    min_frequency = forms.IntegerField(initial=2)
    lowercase = forms.BooleanField(required=False)

    def __init__(self, *args, name_prefix: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if name_prefix:
            # forms.js keeps the name "<prefix>-<algorithm>" until the user types their own.
            self.fields["name"].widget.attrs.update(
                {"data-follows": "algorithm", "data-template": f"{name_prefix}-{{value}}"}
            )
            algorithm = self.initial.get("algorithm", "bpe")
            self.initial.setdefault("name", f"{name_prefix}-{algorithm}")


class RolesForm(forms.Form):
    column_roles = forms.CharField(label="Column roles (JSON)")


class RecipeForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    steps = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14, "class": "mono"}),
        help_text='A JSON list of {"step": name, "params": {...}}.',
    )


class TrainingLaunchForm(forms.Form):
    """Launch a training job. Hyperparameter fields are generated from the runtime's schema,
    so the form, the API and the runtime validate the same ranges.

    Defaults follow the data: the kind from the project's task type, the version with splits,
    its train and validation splits, a registered base that fits the kind (else random weights
    with the project's newest tokenizer). Fields that do not apply to the choices made (LoRA
    settings without LoRA, a base model's fields for another source) are hidden by forms.js and
    neither validated nor used here."""

    name = forms.CharField(max_length=120)
    kind = forms.ChoiceField(choices=())
    base_source = forms.ChoiceField(choices=(), label="Start from")
    family = forms.ChoiceField(choices=(), required=False, label="Architecture")
    size = forms.ChoiceField(choices=(), required=False)
    base_model = forms.ChoiceField(choices=(), required=False, label="Base model")
    base_model_version = forms.ChoiceField(choices=(), required=False, label="Model version")
    base_path = forms.CharField(required=False, label="Local model directory")
    hub_model_id = forms.CharField(
        required=False, label="Hub model id", help_text="Only then is anything downloaded."
    )
    tokenizer = forms.ChoiceField(
        choices=(),
        required=False,
        help_text="Required from random weights; a pretrained base brings its own tokenizer.",
    )
    train_version = forms.ChoiceField(choices=(), label="Dataset version")
    train_split = _split_field(label="Train split", blank="the whole version")
    eval_split = _split_field(
        label="Eval split", blank="— none", help_text="Evaluated during training when chosen."
    )
    method = forms.ChoiceField(choices=(), initial="full")
    # An optional sweep: when a search space is given, one job per trial is launched.
    sweep_space = forms.CharField(
        required=False,
        label="Search space",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "learning_rate: 0.001, 0.003"}),
        help_text="One hyperparameter a line: a list of values (name: 1, 2, 3), or for random "
        "search a range (name: 1e-5 .. 1e-3 log). Leave empty to launch a single job.",
    )
    sweep_method = forms.ChoiceField(
        choices=(("grid", "Grid"), ("random", "Random")), initial="grid", label="Search"
    )
    sweep_max_trials = forms.IntegerField(
        min_value=1, max_value=64, initial=8, label="Max trials", required=False
    )
    sweep_metric = forms.CharField(
        max_length=60,
        initial="eval_loss",
        required=False,
        label="Rank by",
        help_text="A final metric of the trials, e.g. eval_loss or train_loss.",
    )
    sweep_direction = forms.ChoiceField(
        choices=(("minimize", "Lowest is best"), ("maximize", "Highest is best")),
        initial="minimize",
        label="Best is",
    )

    # Fields that only apply to one base source: shown (and used) only for it.
    SOURCE_FIELDS = {
        "family": "random",
        "size": "random",
        "base_model": "base_model",
        "base_model_version": "model_version",
        "base_path": "local_dir",
        "hub_model_id": "hub",
    }

    def __init__(
        self,
        *args,
        kinds,
        base_sources,
        methods,
        presets: dict,
        model_versions,
        tokenizers,
        versions,
        hyperparameters: list[dict],
        task_type: str = "",
        base_models=(),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.presets = presets
        self.fields["kind"].choices = kinds
        self.fields["base_source"].choices = base_sources
        self.fields["method"].choices = methods
        self.fields["family"].choices = [
            (name, p.get("label", name)) for name, p in presets.items()
        ]
        sizes = sorted(
            {size for p in presets.values() for size in p.get("sizes", [])},
            key=lambda s: (
                ["tiny", "small", "base", "medium", "large"].index(s)
                if s in ("tiny", "small", "base", "medium", "large")
                else 99
            ),
        )
        self.fields["size"].choices = [(s, s) for s in sizes]
        self.base_models = {str(b.pk): b for b in base_models}
        self.fields["base_model"].choices = [("", "—")] + [
            (pk, str(b) + (f" ({b.model_type})" if b.model_type else ""))
            for pk, b in self.base_models.items()
        ]
        if not self.base_models:
            self.fields["base_model"].help_text = "The team has no registered base model yet."
        # The page's estimate of a pretrained base is made from its config (with the job's head).
        self.fields["base_model"].widget.attrs["data-base-configs"] = json.dumps(
            {pk: b.config for pk, b in self.base_models.items()}
        )
        self.fields["base_model_version"].choices = [("", "—")] + [
            (str(v.pk), str(v)) for v in model_versions
        ]
        tokenizers = list(tokenizers)
        self.fields["tokenizer"].choices = [("", "— the base model's own")] + [
            (str(t.pk), str(t)) for t in tokenizers
        ]
        self.versions, splits_json = _version_info(versions)
        self.fields["train_version"].choices = [
            (
                pk,
                f"{v} ({v.row_count:,} rows"
                + (f"; splits {', '.join(split_names(v))}" if split_names(v) else "")
                + ")",
            )
            for pk, v in self.versions.items()
        ]
        self.fields["train_version"].widget.attrs["data-version-splits"] = splits_json
        no_text = [pk for pk, v in self.versions.items() if lacks_text(v)]
        if no_text:
            self.fields["train_version"].notes = [
                (_condition("train_version", no_text), NO_TEXT_NOTE)
            ]
        for name, source in self.SOURCE_FIELDS.items():
            self.fields[name].show_when = _condition("base_source", [source])
            self.fields[name].required_when = _condition("base_source", [source])
        self.fields["tokenizer"].required_when = _condition("base_source", ["random"])
        for name in ("sweep_max_trials", "sweep_metric"):
            self.fields[name].required_note = "required for a sweep"

        self.hyperparameter_names = []
        self.lora_names = []
        self.hyperparameter_specs = {spec["name"]: spec for spec in hyperparameters}
        # Hyperparameters of some kinds only (the config's ``kinds``: beta for DPO and KTO, the
        # masking share for masked-LM pre-training): shown, validated and sent only for them.
        self.kind_only = {
            spec["name"]: spec["kinds"] for spec in hyperparameters if spec.get("kinds")
        }
        # Architecture settings (the config's ``families``: dropouts, tied embeddings, ...):
        # only for a model from random weights of a family that has them.
        self.family_only = {
            spec["name"]: spec["families"] for spec in hyperparameters if spec.get("families")
        }
        for spec in hyperparameters:
            field = _hyperparameter_field(spec)
            if spec["name"] in self.kind_only:
                field.show_when = _condition("kind", self.kind_only[spec["name"]])
            if spec["name"] in self.family_only:
                field.show_when = ";".join(
                    filter(
                        None,
                        [
                            getattr(field, "show_when", ""),
                            _condition("base_source", ["random"]),
                            _condition("family", self.family_only[spec["name"]]),
                        ],
                    )
                )
            self.fields[f"hp_{spec['name']}"] = field
            self.hyperparameter_names.append(spec["name"])
            if spec.get("lora_only"):
                self.lora_names.append(spec["name"])

        self._set_defaults(task_type, tokenizers)
        version = self.versions.get(str(self._value("train_version") or ""))
        names = split_names(version) if version else []
        _set_split_choices(
            self.fields["train_split"],
            names,
            source="train_version",
            prefer=TRAIN_SPLITS,
            else_first=True,
        )
        _set_split_choices(
            self.fields["eval_split"],
            names,
            source="train_version",
            prefer=EVAL_SPLITS,
            else_first=False,
        )
        self.initial.setdefault("train_split", default_split(names, TRAIN_SPLITS, else_first=True))
        self.initial.setdefault("eval_split", default_split(names, EVAL_SPLITS, else_first=False))

    def _value(self, name: str):
        """The submitted value of ``name`` (bound form), else its initial value."""
        if self.is_bound:
            return self.data.get(self.add_prefix(name))
        return self.initial.get(name, self.fields[name].initial)

    def _set_defaults(self, task_type: str, tokenizers: list) -> None:
        """Initial values that follow the project and its data (the view's own initial wins)."""
        kind = KIND_FOR_TASK_TYPE.get(task_type, "pretrain_clm")
        self.initial.setdefault("kind", kind)
        kind = self.initial["kind"]
        self.initial.setdefault("train_version", _default_version(self.versions.values()))
        fitting = [pk for pk, b in self.base_models.items() if base_fits_kind(b, kind)]
        newest = max(tokenizers, key=lambda t: (t.created_at, t.pk)) if tokenizers else None
        # The newest tokenizer, for random weights (forms.js selects it again when the user
        # switches to random weights; a pretrained base keeps its own).
        self.newest_tokenizer = str(newest.pk) if newest else ""
        if fitting:
            self.initial.setdefault("base_source", "base_model")
            self.initial.setdefault("base_model", fitting[0])
        else:
            self.initial.setdefault("base_source", "random")
        self.initial.setdefault("family", default_family(self.presets, kind))
        # The launch page's script changes an untouched architecture when the kind changes.
        self.fields["kind"].widget.attrs["data-family-for-kind"] = json.dumps(
            {k: default_family(self.presets, k) for k, _ in self.fields["kind"].choices}
        )
        # Hyperparameters whose default depends on the start (a gentler learning rate for a
        # pretrained base): the page's script switches them with the base source while the user
        # has not typed a value of their own.
        pretrained = self.initial["base_source"] != "random"
        for name, spec in self.hyperparameter_specs.items():
            if spec.get("pretrained_default", spec.get("default")) == spec.get("default"):
                continue
            self.initial.setdefault(
                f"hp_{name}", spec["pretrained_default"] if pretrained else spec["default"]
            )
            self.fields[f"hp_{name}"].widget.attrs.update(
                {
                    "data-follows": "base_source",
                    "data-values": json.dumps(
                        # As the page renders them (str), so an untouched value is recognised.
                        {"random": str(spec["default"]), "*": str(spec["pretrained_default"])}
                    ),
                }
            )
        if self.initial["base_source"] == "random":
            self.initial.setdefault("tokenizer", self.newest_tokenizer)
        self.fields["tokenizer"].widget.attrs["data-random-default"] = self.newest_tokenizer

    def _drop(self, name: str) -> None:
        """Forget a field that does not apply (hidden in the page): no error, no value."""
        self._errors.pop(name, None)
        self.cleaned_data.pop(name, None)

    def applies(self, hyperparameter: str) -> bool:
        """Whether ``hyperparameter`` applies to the kind and method chosen."""
        data = self.cleaned_data
        if hyperparameter in self.lora_names and data.get("method") != "lora":
            return False
        families = self.family_only.get(hyperparameter)
        if families and (data.get("base_source") != "random" or data.get("family") not in families):
            return False
        kinds = self.kind_only.get(hyperparameter)
        return not kinds or data.get("kind") in kinds

    def hyperparameters(self) -> dict:
        return {
            name: self.cleaned_data[f"hp_{name}"]
            for name in self.hyperparameter_names
            if self.applies(name) and self.cleaned_data.get(f"hp_{name}") not in (None, "")
        }

    def clean_sweep_space(self) -> dict:
        """Parse the search space text into the dict ``training.services.sweep_launch`` takes;
        every bad line is reported, not only the first."""
        space: dict = {}
        errors: list[str] = []
        lines = (line.strip() for line in self.cleaned_data["sweep_space"].splitlines())
        for number, line in enumerate(lines, start=1):
            if not line or line.startswith("#"):
                continue
            name, colon, values = (part.strip() for part in line.partition(":"))
            if not colon or not values:
                errors.append(f"Line {number}: write 'name: values'.")
                continue
            spec = self.hyperparameter_specs.get(name)
            if spec is None:
                errors.append(
                    f"Line {number}: '{name}' is not a hyperparameter; choose from "
                    + ", ".join(self.hyperparameter_names)
                    + "."
                )
                continue
            if name in space:
                errors.append(f"Line {number}: '{name}' is given twice.")
                continue
            try:
                space[name] = _sweep_values(values, spec, line_number=number)
            except forms.ValidationError as exc:
                errors.extend(exc.messages)
        if errors:
            raise forms.ValidationError(errors)
        return space

    def clean(self) -> dict:
        cleaned = super().clean()
        source = cleaned.get("base_source")
        for name, only_for in self.SOURCE_FIELDS.items():
            if source != only_for:
                self._drop(name)
        for name in self.hyperparameter_names:
            if not self.applies(name):
                self._drop(f"hp_{name}")
        if source == "random" and not cleaned.get("tokenizer"):
            self.add_error(
                "tokenizer",
                "A model from random weights needs a tokenizer trained on your data "
                "(Data tab -> a version -> Train a tokenizer).",
            )
        if source == "base_model" and not cleaned.get("base_model"):
            self.add_error(
                "base_model",
                "Choose the base model to start from."
                if self.base_models
                else "The team has no registered base model: register one on the Train tab, "
                "or start from random weights.",
            )
        version = self.versions.get(cleaned.get("train_version") or "")
        if version is not None:
            for field in ("train_split", "eval_split"):
                _check_split(self, field, version, (cleaned.get(field) or "").strip())
        if cleaned.get("sweep_space"):
            if not cleaned.get("sweep_max_trials"):
                self.add_error("sweep_max_trials", "How many trials at most?")
            if not (cleaned.get("sweep_metric") or "").strip():
                self.add_error("sweep_metric", "Which metric ranks the trials?")
        return cleaned

    def sweep_fields(self):
        return [
            self[name]
            for name in ("sweep_method", "sweep_max_trials", "sweep_metric", "sweep_direction")
        ]

    def hyperparameter_fields(self):
        return [self[f"hp_{n}"] for n in self.hyperparameter_names if n not in self.lora_names]

    def lora_fields(self):
        return [self[f"hp_{n}"] for n in self.lora_names]


def _sweep_values(text: str, spec: dict, *, line_number: int) -> list | dict:
    """``1, 2, 3`` -> a list of values of the hyperparameter's type; ``low .. high [log]`` ->
    a range for random search. Range checks are the service's (the same as for one job)."""
    kind = spec.get("type")

    def parse(raw: str):
        raw = raw.strip()
        if spec.get("choices") or kind not in ("int", "float"):
            return raw
        try:
            number = float(raw)
        except ValueError:
            raise forms.ValidationError(
                f"Line {line_number}: '{raw}' is not a number ({spec['name']})."
            ) from None
        if kind == "int":
            if not number.is_integer():
                raise forms.ValidationError(
                    f"Line {line_number}: {spec['name']} takes whole numbers, not {raw}."
                )
            return int(number)
        return number

    if ".." in text:
        body = text.strip()
        log = body.endswith("log")
        low, _, high = body.removesuffix("log").partition("..")
        if kind not in ("int", "float"):
            raise forms.ValidationError(
                f"Line {line_number}: {spec['name']} is not numeric; list its values instead."
            )
        space = {"min": parse(low), "max": parse(high), "log": log}
        if kind == "int":
            space["integer"] = True
        return space
    values = [parse(v) for v in text.split(",") if v.strip()]
    if spec.get("choices"):
        unknown = [v for v in values if v not in spec["choices"]]
        if unknown:
            raise forms.ValidationError(
                f"Line {line_number}: {spec['name']} is one of {', '.join(spec['choices'])}."
            )
    return values


def _hyperparameter_field(spec: dict) -> forms.Field:
    common = {
        "required": False,
        "label": spec.get("label", spec["name"].replace("_", " ")),
        "help_text": spec.get("help", ""),
        "initial": spec.get("default"),
    }
    kind = spec.get("type")
    if spec.get("choices"):
        return forms.ChoiceField(choices=[(c, c) for c in spec["choices"]], **common)
    if kind == "int":
        return forms.IntegerField(min_value=spec.get("min"), max_value=spec.get("max"), **common)
    if kind == "float":
        return forms.FloatField(min_value=spec.get("min"), max_value=spec.get("max"), **common)
    if kind == "bool" and spec.get("default") is None:
        # Three ways: the family's own value (not sent), yes or no (keyed as str(True) and
        # str(False), so a cloned job's value selects its option).
        return forms.TypedChoiceField(
            choices=[("", "the family's default"), ("True", "yes"), ("False", "no")],
            coerce=lambda value: value == "True",
            empty_value=None,
            **common,
        )
    if kind == "bool":
        return forms.BooleanField(**common)
    return forms.CharField(**{**common, "required": False})


def _evaluation_setting_field(name: str, **kwargs) -> forms.Field:
    """A form field for one row of the evaluation runtime's settings table (plain Python, no
    torch), so the form has no bounds or defaults of its own."""
    from evaluation.runtime.config import SETTINGS

    setting = next(s for s in SETTINGS if s.name == name)
    if setting.type == "bool":
        if not setting.nullable:
            return forms.BooleanField(
                initial=setting.default, required=False, help_text=setting.help, **kwargs
            )
        # Empty means the runtime decides (the help says how).
        return forms.TypedChoiceField(
            choices=(("", "Default"), ("true", "Yes"), ("false", "No")),
            coerce=lambda value: value == "true",
            empty_value=None,
            required=False,
            help_text=setting.help,
            **kwargs,
        )
    field_class = forms.IntegerField if setting.type == "int" else forms.FloatField
    return field_class(
        initial=setting.default,
        required=setting.default is not None,
        min_value=setting.min,
        max_value=setting.max,
        help_text=setting.help,
        **kwargs,
    )


def _model_version_choices(form: forms.Form, models: list) -> None:
    """The model versions to pick from: a version with warnings (a diverged run) is marked,
    and never the one proposed by default."""
    form.fields["model_version"].choices = [
        (str(m.pk), f"{m} (warnings)" if m.warnings else str(m)) for m in models
    ]
    clean = [m for m in models if not m.warnings]
    if clean:
        form.initial.setdefault("model_version", str(clean[0].pk))


class EvaluationForm(forms.Form):
    """Evaluate a model version on a split of a dataset version. The split is a select of the
    chosen version's splits (test, else validation, else its first); generation settings apply
    to generative models only and are hidden (and ignored) for the others."""

    model_version = forms.ChoiceField(choices=(), label="Model version")
    dataset_version = forms.ChoiceField(choices=(), label="Dataset version")
    split = _split_field(label="Split", blank="the whole version")
    metrics = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: the task's usual metrics.",
    )
    # Bounds, defaults and help come from the evaluation runtime's one settings table; the
    # service validates with that table too (top_p's exclusive 0 is its message, shown here).
    max_examples = _evaluation_setting_field("max_examples")
    max_new_tokens = _evaluation_setting_field("max_new_tokens", label="Max new tokens")
    temperature = _evaluation_setting_field("temperature")
    top_p = _evaluation_setting_field("top_p", label="Top-p")
    num_beams = _evaluation_setting_field("num_beams", label="Beams")
    # Perplexity of long text (a sliding window over the whole text).
    stride = _evaluation_setting_field("stride", label="Perplexity stride")
    join_rows = _evaluation_setting_field("join_rows", label="Score rows as one text")
    score_end_token = _evaluation_setting_field("score_end_token", label="Score end tokens")

    GENERATION_SETTINGS = ("max_new_tokens", "temperature", "top_p", "num_beams")
    PERPLEXITY_SETTINGS = ("stride", "join_rows", "score_end_token")

    def __init__(self, *args, models=(), versions=(), task_type: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        models = list(models)
        _model_version_choices(self, models)
        self.generative = {str(m.pk) for m in models if m.task_kind in TEXT_GENERATING_KINDS}
        for name in self.GENERATION_SETTINGS:
            self.fields[name].show_when = _condition(
                "model_version", sorted(self.generative) or ["-"]
            )
        self.versions, splits_json = _version_info(versions)
        self.fields["dataset_version"].choices = [
            (pk, f"{v}" + (f" (splits: {', '.join(split_names(v))})" if split_names(v) else ""))
            for pk, v in self.versions.items()
        ]
        self.fields["dataset_version"].widget.attrs["data-version-splits"] = splits_json
        no_text = [pk for pk, v in self.versions.items() if lacks_text(v)]
        if no_text:
            self.fields["dataset_version"].notes = [
                (_condition("dataset_version", no_text), NO_TEXT_NOTE)
            ]
        self.fields["metrics"].choices = [
            (m.name, m.label) for m in METRICS.values() if task_type in m.tasks
        ]
        self.initial.setdefault("dataset_version", _default_version(self.versions.values()))
        chosen = (
            self.data.get(self.add_prefix("dataset_version"))
            if self.is_bound
            else self.initial["dataset_version"]
        )
        version = self.versions.get(str(chosen or ""))
        names = split_names(version) if version else []
        _set_split_choices(
            self.fields["split"],
            names,
            source="dataset_version",
            prefer=EVALUATE_SPLITS,
            else_first=True,
        )
        self.initial.setdefault("split", default_split(names, EVALUATE_SPLITS, else_first=True))

    def is_generative(self) -> bool:
        return self.cleaned_data.get("model_version") in self.generative

    def clean(self) -> dict:
        from evaluation.runtime.config import validate_settings
        from llmhub.reporting import JobInputError

        cleaned = super().clean()
        if not self.is_generative():
            for name in self.GENERATION_SETTINGS:
                self._errors.pop(name, None)
                cleaned.pop(name, None)
        # The runtime's own validator, setting by setting, so each error lands on its field
        # together with the others (the service checks them again, all together).
        for name in ("max_examples", *self.GENERATION_SETTINGS, *self.PERPLEXITY_SETTINGS):
            if cleaned.get(name) is not None:
                try:
                    validate_settings({name: cleaned[name]})
                except JobInputError as exc:
                    self.add_error(name, str(exc))
        version = self.versions.get(cleaned.get("dataset_version") or "")
        if version is not None:
            _check_split(self, "split", version, (cleaned.get("split") or "").strip())
        return cleaned

    def settings(self) -> dict:
        data = self.cleaned_data
        settings = {k: data[k] for k in self.GENERATION_SETTINGS if data.get(k) is not None}
        if data.get("max_examples"):
            settings["max_examples"] = data["max_examples"]
        for name in ("stride", "join_rows"):
            if data.get(name) is not None:
                settings[name] = data[name]
        if data.get("score_end_token"):
            settings["score_end_token"] = True
        return settings


class BiasReportForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[
            ("crows_pairs", "Stereotype preference (CrowS-Pairs)"),
            ("bold", "Generation sentiment gap (BOLD)"),
            ("winobias", "Pro- vs anti-stereotype (WinoBias)"),
        ]
    )
    model_version = forms.ChoiceField(choices=(), label="Model version")
    probe_version = forms.ChoiceField(
        choices=(),
        required=False,
        label="Probe set",
        help_text="Built-in unless you choose one of your datasets with the same columns.",
    )
    limit = forms.IntegerField(
        required=False,
        min_value=1,
        label="Limit",
        help_text="At most this many pairs (or prompts per group).",
    )

    def __init__(self, *args, models=(), versions=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _model_version_choices(self, list(models))
        self.fields["probe_version"].choices = [("", "built-in")] + [
            (str(v.pk), str(v)) for v in versions
        ]

    def params(self) -> dict:
        limit = self.cleaned_data.get("limit")
        if not limit:
            return {}
        key = "max_prompts_per_group" if self.cleaned_data["kind"] == "bold" else "max_pairs"
        return {key: limit}


# --- the Deploy stage ---------------------------------------------------------------------------


class EndpointForm(forms.Form):
    """A new endpoint. Types only: the service checks the slug, the upstream URL and the rest
    (all at once, next to their fields)."""

    name = forms.CharField(max_length=120)
    slug = forms.SlugField(
        max_length=64,
        required=False,
        help_text="What clients pass as <code>model</code>; made from the name if empty.",
    )
    stage = forms.ChoiceField(choices=(), initial="staging")
    engine = forms.ChoiceField(choices=(), initial="local", label="Engine")
    upstream_url = forms.CharField(
        max_length=500,
        required=False,
        label="Upstream URL",
        help_text="The engine's OpenAI-compatible base URL, e.g. http://gpu-1:8000/v1.",
    )
    upstream_model = forms.CharField(
        max_length=200, required=False, label="Upstream model", help_text="Its model name."
    )
    upstream_api_key = forms.CharField(
        max_length=500,
        required=False,
        label="Upstream API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Sent to the upstream; never shown again.",
    )
    store_text = forms.BooleanField(
        required=False,
        initial=True,
        label="Store prompt and completion text in the request log",
    )
    log_retention_days = forms.IntegerField(
        min_value=1, initial=30, label="Keep the request log for (days)"
    )

    def __init__(self, *args, **kwargs) -> None:
        from serving.models import EndpointStage, EngineKind

        # Ids of their own: the Deploy tab shows this form beside the key form.
        kwargs.setdefault("auto_id", "endpoint_%s")
        super().__init__(*args, **kwargs)
        self.fields["stage"].choices = EndpointStage.choices
        self.fields["engine"].choices = EngineKind.choices
        for name in ("upstream_url", "upstream_model", "upstream_api_key"):
            self.fields[name].show_when = _condition("engine", ["external"])
        for name in ("upstream_url", "upstream_model"):
            self.fields[name].required_when = _condition("engine", ["external"])

    def clean(self) -> dict:
        cleaned = super().clean()
        # With the other errors at once; the service checks the URL itself (public, http/s).
        if cleaned.get("engine") == "external":
            for name in ("upstream_url", "upstream_model"):
                if not (cleaned.get(name) or "").strip():
                    self.add_error(name, "An external engine needs this.")
        return cleaned

    def service_arguments(self) -> dict:
        """The cleaned data as ``endpoint_create`` keyword arguments; a local endpoint's
        (hidden, disabled) upstream fields are not sent."""
        data = dict(self.cleaned_data)
        if data["engine"] != "external":
            for name in ("upstream_url", "upstream_model", "upstream_api_key"):
                data.pop(name)
        data["slug"] = data["slug"] or ""
        return data


class EndpointSettingsForm(forms.Form):
    """An endpoint's name, stage, privacy switch and retention; an external engine's upstream
    (its key kept when left empty)."""

    name = forms.CharField(max_length=120)
    stage = forms.ChoiceField(choices=())
    store_text = forms.BooleanField(
        required=False, label="Store prompt and completion text in the request log"
    )
    log_retention_days = forms.IntegerField(min_value=1, label="Keep the request log for (days)")
    upstream_url = forms.CharField(max_length=500, label="Upstream URL")
    upstream_model = forms.CharField(max_length=200, label="Upstream model")
    upstream_api_key = forms.CharField(
        max_length=500,
        required=False,
        label="Upstream API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Empty: keep the current one.",
    )

    def __init__(self, *args, endpoint, **kwargs) -> None:
        from serving.models import EndpointStage

        kwargs.setdefault("auto_id", "settings_%s")
        kwargs.setdefault(
            "initial",
            {
                name: getattr(endpoint, name)
                for name in (
                    "name",
                    "stage",
                    "store_text",
                    "log_retention_days",
                    "upstream_url",
                    "upstream_model",
                )
            },
        )
        super().__init__(*args, **kwargs)
        self.fields["stage"].choices = EndpointStage.choices
        if endpoint.engine != "external":
            for name in ("upstream_url", "upstream_model", "upstream_api_key"):
                del self.fields[name]

    def changes(self) -> dict:
        """The cleaned data as ``endpoint_update`` changes (an empty upstream key: unchanged)."""
        changes = dict(self.cleaned_data)
        if not changes.get("upstream_api_key"):
            changes.pop("upstream_api_key", None)
        return changes


class ServingKeyForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="Who or what uses it, e.g. 'support bot'.")
    endpoint = forms.ChoiceField(choices=(), required=False, label="May call")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, label="Expires after (days)", help_text="Empty: never."
    )
    requests_per_minute = forms.IntegerField(
        required=False, min_value=1, label="Requests per minute", help_text="Empty: no limit."
    )
    tokens_per_minute = forms.IntegerField(
        required=False,
        min_value=1,
        label="Tokens per minute",
        help_text="Prompt + max_tokens, reserved when a request is admitted. Empty: no limit.",
    )
    token_budget = forms.IntegerField(
        required=False,
        min_value=1,
        label="Token budget",
        help_text="Prompt + completion tokens per period. Empty: no budget.",
    )
    # Shown (and sent) only with a budget: forms.js disables it otherwise.
    budget_period = forms.ChoiceField(
        choices=(), initial="month", required=False, label="Budget period"
    )

    def __init__(self, *args, endpoints=(), **kwargs) -> None:
        from serving.models import BudgetPeriod

        kwargs.setdefault("auto_id", "key_%s")
        super().__init__(*args, **kwargs)
        self.endpoints = {str(e.pk): e for e in endpoints}
        self.fields["endpoint"].choices = [("", "every endpoint of the project")] + [
            (pk, f"{e.name} ({e.slug})") for pk, e in self.endpoints.items()
        ]
        self.fields["budget_period"].choices = BudgetPeriod.choices
        self.fields["budget_period"].show_when = "token_budget!="

    def service_arguments(self) -> dict:
        data = dict(self.cleaned_data)
        data["endpoint"] = self.endpoints.get(data["endpoint"] or "")
        data["budget_period"] = data.get("budget_period") or "month"
        return data


class _VersionChoiceForm(forms.Form):
    """A form choosing one of the project's servable versions, best first."""

    version = forms.ChoiceField(choices=(), label="Model version")
    # Ids of their own: the endpoint page shows the promote and canary forms together.
    id_prefix = "version"

    def __init__(self, *args, versions=(), **kwargs) -> None:
        kwargs.setdefault("auto_id", f"{self.id_prefix}_%s")
        super().__init__(*args, **kwargs)
        # ``versions``: (ModelVersion, label) pairs in the order to show them.
        self.versions = {str(v.pk): v for v, _label in versions}
        self.fields["version"].choices = [(str(v.pk), label) for v, label in versions]

    def chosen(self):
        """The chosen version (one of the choices), also once a service refused it (its
        error removed it from cleaned_data)."""
        return self.versions.get(str(self.data.get(self.add_prefix("version")) or ""))


class PromoteForm(_VersionChoiceForm):
    id_prefix = "promote"
    reason = forms.CharField(
        max_length=2000, required=False, label="Reason", help_text="Kept in the history."
    )
    override_reason = forms.CharField(
        required=False,
        label="Override",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Only when the version does not meet the goals: why it should serve anyway. "
        "Recorded with the reasons it was blocked for.",
    )


class CanaryForm(_VersionChoiceForm):
    id_prefix = "canary"
    percent = forms.IntegerField(
        min_value=1, max_value=99, initial=10, label="Share of the traffic (%)"
    )
    reason = forms.CharField(max_length=2000, required=False, label="Reason")
    override_reason = forms.CharField(
        required=False,
        label="Override",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Only when the version does not meet the goals.",
    )


class PlaygroundForm(forms.Form):
    """One playground request: the chat messages and the generation settings."""

    system = forms.CharField(
        required=False,
        max_length=20_000,
        label="System message",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    prompt = forms.CharField(
        max_length=20_000, label="User message", widget=forms.Textarea(attrs={"rows": 4})
    )
    max_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=64, label="Max tokens")
    temperature = forms.FloatField(
        min_value=0, max_value=2, initial=0.7, label="Temperature", help_text="0: greedy."
    )
    top_p = forms.FloatField(max_value=1, initial=1.0, label="top_p")
    seed = forms.IntegerField(required=False, min_value=0, label="Seed")
    stop = forms.CharField(
        required=False,
        label="Stop",
        max_length=500,
        help_text="Up to 4 stop strings, one per line.",
        widget=forms.Textarea(attrs={"rows": 1}),
    )

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "playground_%s")
        super().__init__(*args, **kwargs)

    def clean_top_p(self) -> float:
        if self.cleaned_data["top_p"] <= 0:
            raise forms.ValidationError("top_p must be above 0 (and at most 1).")
        return self.cleaned_data["top_p"]

    def clean_stop(self) -> list[str]:
        stops = [s for s in self.cleaned_data["stop"].splitlines() if s]
        if len(stops) > 4:
            raise forms.ValidationError("At most 4 stop strings.")
        return stops

    def request_body(self, model: str) -> dict:
        """The /v1/chat/completions body for the inference process (streaming, with usage)."""
        data = self.cleaned_data
        messages = []
        if data["system"].strip():
            messages.append({"role": "system", "content": data["system"]})
        messages.append({"role": "user", "content": data["prompt"]})
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": data["max_tokens"],
            "temperature": data["temperature"],
            "top_p": data["top_p"],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if data["seed"] is not None:
            body["seed"] = data["seed"]
        if data["stop"]:
            body["stop"] = data["stop"]
        return body


# --- the Feedback stage ------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


DEFAULT_CRITERIA = "helpfulness\nharmlessness\nfactuality"


class CampaignForm(forms.Form):
    """A new feedback campaign: what is judged, by whom, and where the items come from (each
    source's own fields shown only while it is chosen). Types only: the campaign service checks
    the rest, every error at once next to its field."""

    name = forms.CharField(max_length=120)
    task = forms.ChoiceField(choices=(), initial="pairwise")
    instructions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Shown to the raters beside every item.",
    )
    criteria = forms.CharField(
        required=False,
        initial=DEFAULT_CRITERIA,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Criteria",
        help_text="One per line; each response is rated 1-5 on each.",
    )
    source = forms.ChoiceField(choices=(), initial="evaluation", label="Items from")
    runs = forms.MultipleChoiceField(
        choices=(),
        required=False,
        label="Evaluation runs",
        help_text="One run: one response per item. Two (pairwise) or more (ranking) on the same "
        "dataset version and split: their outputs side by side, example by example.",
        widget=forms.SelectMultiple(attrs={"size": 5}),
    )
    endpoint = forms.ChoiceField(choices=(), required=False, label="Endpoint")
    version = forms.ChoiceField(
        choices=(), required=False, label="Only answers of", help_text="Empty: every version."
    )
    since = forms.DateTimeField(required=False, label="From", help_text="Empty: the start.")
    until = forms.DateTimeField(required=False, label="Until", help_text="Empty: now.")
    thumbs_down_only = forms.BooleanField(required=False, label="Only answers given a thumbs down")
    limit = forms.IntegerField(
        required=False, min_value=1, max_value=50_000, initial=1000, label="At most (requests)"
    )
    versions = forms.MultipleChoiceField(
        choices=(),
        required=False,
        label="Model versions",
        help_text="Two or more: a job loads each and asks it the same prompts.",
        widget=forms.SelectMultiple(attrs={"size": 5}),
    )
    endpoints = forms.MultipleChoiceField(
        choices=(),
        required=False,
        label="Or endpoints",
        help_text="Two or more instead of versions: the job calls each through the inference "
        "process; each answer names the version that gave it.",
        widget=forms.SelectMultiple(attrs={"size": 4}),
    )
    prompts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Prompts",
        help_text="One per line.",
    )
    max_tokens = forms.IntegerField(
        required=False, min_value=1, max_value=4096, initial=128, label="Max tokens"
    )
    upload = forms.FileField(
        required=False,
        label="File",
        help_text="JSONL or CSV with <code>prompt</code> and <code>response_a</code>/"
        "<code>response_b</code>, <code>responses</code> (a list) or <code>response</code>.",
    )
    raters = forms.MultipleChoiceField(
        choices=(),
        required=False,
        label="Raters",
        widget=forms.CheckboxSelectMultiple,
        help_text="Team members whose role may label (raters, managers, admins).",
    )
    overlap = forms.IntegerField(
        min_value=1, max_value=10, initial=2, label="Raters per item (overlap)"
    )
    blind = forms.BooleanField(
        required=False,
        initial=True,
        label="Blind: raters never see which model wrote a response",
    )
    assignment_timeout_seconds = forms.IntegerField(
        min_value=30,
        initial=1800,
        label="Assignment timeout (seconds)",
        help_text="An item not submitted in time goes back to the queue.",
    )

    SOURCE_FIELDS = {
        "evaluation": ("runs",),
        "requests": ("endpoint", "version", "since", "until", "thumbs_down_only", "limit"),
        "versions": ("versions", "endpoints", "prompts", "max_tokens"),
        "upload": ("upload",),
    }
    REQUIRED_BY_SOURCE = {"evaluation": "runs", "requests": "endpoint", "upload": "upload"}

    def __init__(
        self, *args, runs=(), endpoints=(), model_versions=(), members=(), **kwargs
    ) -> None:
        from evaluation.feedback.models import FeedbackTask, ItemSource

        kwargs.setdefault("auto_id", "campaign_%s")
        super().__init__(*args, **kwargs)
        self.runs = {str(r.pk): r for r in runs}
        self.endpoints = {str(e.pk): e for e in endpoints}
        self.model_versions = {str(v.pk): v for v in model_versions}
        self.members = {str(m.user_id): m.user for m in members}
        self.fields["task"].choices = FeedbackTask.choices
        self.fields["source"].choices = ItemSource.choices
        self.fields["runs"].choices = [
            (pk, f"{r.name or f'run {r.pk}'} · {r.model_version} · {r.split or 'all'}")
            for pk, r in self.runs.items()
        ]
        self.fields["endpoint"].choices = [("", "—")] + [
            (pk, f"{e.name} ({e.slug})") for pk, e in self.endpoints.items()
        ]
        version_choices = [(pk, str(v)) for pk, v in self.model_versions.items()]
        self.fields["version"].choices = [("", "every version"), *version_choices]
        self.fields["versions"].choices = version_choices
        self.fields["endpoints"].choices = [
            (pk, f"{e.name} ({e.slug})") for pk, e in self.endpoints.items()
        ]
        self.fields["raters"].choices = [
            (str(m.user_id), f"{m.user.get_username()} ({m.role})") for m in members
        ]
        self.fields["criteria"].show_when = _condition("task", ["rating"])
        for source, names in self.SOURCE_FIELDS.items():
            for name in names:
                self.fields[name].show_when = _condition("source", [source])
        for source, name in self.REQUIRED_BY_SOURCE.items():
            self.fields[name].required_when = _condition("source", [source])
        self.fields["prompts"].required_when = _condition("source", ["versions"])
        for name in ("versions", "endpoints"):
            self.fields[name].required_note = "two or more versions, or endpoints"

    def clean(self) -> dict:
        cleaned = super().clean()
        source = cleaned.get("source")
        # With the other errors at once: what the chosen source cannot go without.
        needed = dict(self.REQUIRED_BY_SOURCE)
        if source == "versions":
            versions, endpoints = cleaned.get("versions") or [], cleaned.get("endpoints") or []
            if versions and endpoints:
                self.add_error("endpoints", "Compare model versions or endpoints, not both.")
            elif len(endpoints) == 1 or (not endpoints and len(versions) < 2):
                field = "endpoints" if endpoints else "versions"
                self.add_error(field, f"Choose two or more {field} to compare.")
            if not _lines(cleaned.get("prompts", "")):
                self.add_error("prompts", "Give at least one prompt.")
        elif source in needed and not cleaned.get(needed[source]):
            self.add_error(needed[source], "This source needs it.")
        if cleaned.get("task") == "rating" and not _lines(cleaned.get("criteria", "")):
            self.add_error("criteria", "Name at least one criterion.")
        return cleaned

    def service_arguments(self) -> dict:
        """``campaign_create`` keyword arguments (only the chosen source's parameters)."""
        data = self.cleaned_data
        source = data["source"]
        params: dict = {}
        if source == "evaluation":
            params = {"runs": [int(pk) for pk in data["runs"]]}
        elif source == "requests":
            params = {"endpoint": int(data["endpoint"])}
            if data.get("version"):
                params["version"] = int(data["version"])
            for name in ("since", "until"):
                if data.get(name):
                    params[name] = data[name].isoformat()
            params["thumbs_down_only"] = bool(data.get("thumbs_down_only"))
            if data.get("limit"):
                params["limit"] = data["limit"]
        elif source == "versions":
            compared = "endpoints" if data.get("endpoints") else "versions"
            params = {
                compared: [int(pk) for pk in data[compared]],
                "prompts": _lines(data["prompts"]),
            }
        return {
            "name": data["name"],
            "task": data["task"],
            "instructions": data["instructions"],
            "criteria": _lines(data["criteria"]) if data["task"] == "rating" else None,
            "source": source,
            "source_params": params,
            "overlap": data["overlap"],
            "blind": data["blind"],
            "assignment_timeout_seconds": data["assignment_timeout_seconds"],
            "raters": [self.members[pk] for pk in data["raters"]],
            "upload": data.get("upload") if source == "upload" else None,
        }

    def generation_arguments(self) -> dict | None:
        """``generation_launch`` arguments for a campaign made of versions' generations."""
        data = self.cleaned_data
        if data["source"] != "versions":
            return None
        return {
            "versions": [self.model_versions[pk] for pk in data["versions"]],
            "endpoints": [self.endpoints[pk] for pk in data.get("endpoints") or []],
            "prompts": _lines(data["prompts"]),
            "settings": {"max_tokens": data.get("max_tokens") or 128},
        }


class CampaignSettingsForm(forms.Form):
    """What stays editable after launch: instructions, raters, overlap, timeout. The service
    refuses a change that would invalidate collected labels, with the reason."""

    instructions = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    raters = forms.MultipleChoiceField(
        choices=(), required=False, widget=forms.CheckboxSelectMultiple
    )
    overlap = forms.IntegerField(min_value=1, max_value=10, label="Raters per item (overlap)")
    assignment_timeout_seconds = forms.IntegerField(
        min_value=30, label="Assignment timeout (seconds)"
    )

    def __init__(self, *args, campaign, members=(), current_raters=(), **kwargs) -> None:
        kwargs.setdefault("auto_id", "settings_%s")
        kwargs.setdefault(
            "initial",
            {
                "instructions": campaign.instructions,
                "overlap": campaign.overlap,
                "assignment_timeout_seconds": campaign.assignment_timeout_seconds,
                "raters": [str(u.pk) for u in current_raters],
            },
        )
        super().__init__(*args, **kwargs)
        self.campaign = campaign
        self.members = {str(m.user_id): m.user for m in members}
        self.current = {str(u.pk) for u in current_raters}
        self.fields["raters"].choices = [
            (str(m.user_id), f"{m.user.get_username()} ({m.role})") for m in members
        ]

    def changes(self) -> dict:
        """The fields whose value changed, as ``campaign_update`` changes."""
        data = self.cleaned_data
        return {
            name: data[name]
            for name in ("instructions", "overlap", "assignment_timeout_seconds")
            if data[name] != getattr(self.campaign, name)
        }

    def raters_changed(self) -> list | None:
        """The new raters (users) when the selection changed, else None."""
        chosen = set(self.cleaned_data["raters"])
        if chosen == self.current:
            return None
        return [self.members[pk] for pk in self.cleaned_data["raters"]]


def _ordinal(place: int) -> str:
    """1 -> "Best", 2 -> "2nd", 3 -> "3rd", 4 -> "4th" (an item has at most 8 responses)."""
    return {1: "Best", 2: "2nd", 3: "3rd"}.get(place, f"{place}th")


class AdjudicateForm(forms.Form):
    """A manager's label for an item in disagreement, with the inputs of the campaign's task:
    pairwise, the choice; ranking, a select per place (best first) of the item's responses;
    rating, a 1-5 number per criterion per response; correction, which response and its
    corrected text. Responses are named in the item's own order (response 1 is the first as
    stored), which is how an adjudicated value is stored. The form checks that each input is
    there and of its type; what the value means (each response ranked once, the scale, the
    text's length) is checked by the one validator, ``validate_judgment_value``, in the
    service, whose refusal the page shows beside the field errors."""

    item = forms.IntegerField(widget=forms.HiddenInput)

    def __init__(
        self,
        *args,
        task: str,
        n_responses: int,
        criteria: list[str] | tuple[str, ...] = (),
        item_pk: int | None = None,
        adjudicated: dict | None = None,
        **kwargs,
    ) -> None:
        from evaluation.feedback.models import RATING_SCALE
        from evaluation.feedback.services.labeling import PAIRWISE_CHOICES

        # Each item of the page has its form: ids of their own.
        kwargs.setdefault("auto_id", f"id_adjudicate_{item_pk}_%s")
        super().__init__(*args, **kwargs)
        self.task, self.n_responses, self.criteria = task, n_responses, list(criteria)
        self.initial.setdefault("item", item_pk)
        responses = [("", "—")] + [(str(p), f"Response {p}") for p in range(1, n_responses + 1)]
        labels = {
            "a": "A (response 1) is better",
            "b": "B (response 2) is better",
            "tie": "Tie",
            "both_bad": "Both bad",
        }
        if task == "pairwise":
            self.fields["choice"] = forms.ChoiceField(
                choices=[("", "—")] + [(c, labels.get(c, c)) for c in PAIRWISE_CHOICES],
                label="The label that counts",
            )
        elif task == "ranking":
            for place in range(1, n_responses + 1):
                self.fields[f"rank_{place}"] = forms.TypedChoiceField(
                    choices=responses, coerce=int, label=_ordinal(place)
                )
        elif task == "rating":
            low, high = RATING_SCALE
            for position in range(1, n_responses + 1):
                for criterion in self.criteria:
                    label = f"Response {position}: {criterion}"
                    self.fields[f"rating_{position}_{criterion}"] = forms.IntegerField(
                        min_value=low,
                        max_value=high,
                        label=label,
                        widget=forms.NumberInput(attrs={"aria-label": label, "class": "score"}),
                    )
        elif task == "correction":
            if n_responses > 1:
                self.fields["response"] = forms.TypedChoiceField(
                    choices=responses, coerce=int, label="Corrected response"
                )
            self.fields["text"] = forms.CharField(
                label="Corrected text",
                strip=False,
                widget=forms.Textarea(attrs={"rows": 3}),
            )
        if adjudicated and not self.is_bound:
            self.initial.update(self._initial_from(adjudicated))

    def _initial_from(self, value: dict) -> dict:
        """The inputs holding an already adjudicated ``value`` (stored in the item's order)."""
        if self.task == "pairwise":
            return {"choice": value.get("choice")}
        if self.task == "ranking":
            return {f"rank_{k}": i + 1 for k, i in enumerate(value.get("ranking") or [], 1)}
        if self.task == "rating":
            return {
                f"rating_{position}_{criterion}": score
                for position, row in enumerate(value.get("ratings") or [], 1)
                for criterion, score in (row or {}).items()
            }
        return {"response": (value.get("response") or 0) + 1, "text": value.get("text", "")}

    def place_fields(self) -> list:
        """The ranking's selects, best first."""
        return [self[f"rank_{p}"] for p in range(1, self.n_responses + 1)]

    def rating_rows(self) -> list[tuple[int, list]]:
        """``(response position, [its field per criterion])`` for the rating table."""
        return [
            (p, [self[f"rating_{p}_{c}"] for c in self.criteria])
            for p in range(1, self.n_responses + 1)
        ]

    def value(self) -> dict:
        """The judgment value the inputs make, for the service's validator (a valid form)."""
        data = self.cleaned_data
        if self.task == "pairwise":
            return {"choice": data["choice"], "reason": ""}
        if self.task == "ranking":
            return {"ranking": [data[f"rank_{p}"] for p in range(1, self.n_responses + 1)]}
        if self.task == "rating":
            return {
                "ratings": [
                    {c: data[f"rating_{p}_{c}"] for c in self.criteria}
                    for p in range(1, self.n_responses + 1)
                ]
            }
        value = {"text": data["text"]}
        if "response" in data:
            value["response"] = data["response"]
        return value


DEFAULT_JUDGING_PROMPT = (
    "You are judging answers to a user's prompt.\n\n{instructions}\n\nPrompt:\n{prompt}\n\n"
    "{responses}\n\nAnswer with the label only."
)


class AIRaterForm(forms.Form):
    """A model as a rater: one of the project's endpoints, or an OpenAI-compatible URL."""

    name = forms.CharField(max_length=120)
    via = forms.ChoiceField(
        choices=(("endpoint", "An endpoint of this project"), ("url", "An OpenAI-compatible URL")),
        initial="endpoint",
        widget=forms.RadioSelect,
        label="Model",
    )
    endpoint = forms.ChoiceField(choices=(), required=False, label="Endpoint")
    base_url = forms.CharField(
        max_length=500, required=False, label="Base URL", help_text="e.g. https://api.example/v1"
    )
    model = forms.CharField(max_length=200, required=False, label="Model name")
    api_key = forms.CharField(
        max_length=500,
        required=False,
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Never shown again.",
    )
    judging_prompt = forms.CharField(
        initial=DEFAULT_JUDGING_PROMPT,
        widget=forms.Textarea(attrs={"rows": 5}),
        label="Judging prompt",
    )

    def __init__(self, *args, endpoints=(), **kwargs) -> None:
        kwargs.setdefault("auto_id", "airater_%s")
        super().__init__(*args, **kwargs)
        self.endpoints = {str(e.pk): e for e in endpoints}
        self.fields["endpoint"].choices = [("", "—")] + [
            (pk, f"{e.name} ({e.slug})") for pk, e in self.endpoints.items()
        ]
        self.fields["endpoint"].show_when = _condition("via", ["endpoint"])
        self.fields["endpoint"].required_when = _condition("via", ["endpoint"])
        for name in ("base_url", "model", "api_key"):
            self.fields[name].show_when = _condition("via", ["url"])
        for name in ("base_url", "model"):
            self.fields[name].required_when = _condition("via", ["url"])

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("via") == "endpoint" and not cleaned.get("endpoint"):
            self.add_error("endpoint", "Choose the endpoint.")
        if cleaned.get("via") == "url":
            for name in ("base_url", "model"):
                if not (cleaned.get(name) or "").strip():
                    self.add_error(name, "A URL rater needs this.")
        return cleaned

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        args = {"name": data["name"], "judging_prompt": data["judging_prompt"]}
        if data["via"] == "endpoint":
            args["endpoint"] = self.endpoints.get(data["endpoint"])
        else:
            args.update(base_url=data["base_url"], model=data["model"], api_key=data["api_key"])
        return args


class FeedbackExportForm(forms.Form):
    format = forms.ChoiceField(
        choices=(
            ("preference", "Preference pairs: prompt / chosen / rejected (reward model, DPO)"),
            ("unpaired", "Unpaired: prompt / completion / label (KTO)"),
        ),
        initial="preference",
    )
    include_ai = forms.BooleanField(
        required=False, label="Include the labels of AI raters approved for training"
    )

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "export_%s")
        super().__init__(*args, **kwargs)
