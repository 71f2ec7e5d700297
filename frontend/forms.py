"""Forms of the browser UI. They parse and validate input; services do the writing."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from evaluation.metrics.catalog import METRICS
from projects.models import Comparison, Role, Split, TaskType


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

    name = forms.CharField(max_length=120, required=False, help_text="Name of the new dataset.")
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
    train = forms.FloatField(initial=0.8, min_value=0, max_value=1)
    validation = forms.FloatField(initial=0.1, min_value=0, max_value=1)
    test = forms.FloatField(initial=0.1, min_value=0, max_value=1)
    seed = forms.IntegerField(initial=42)
    stratify_column = forms.ChoiceField(choices=(), required=False, label="Stratify by")
    by_column = forms.ChoiceField(choices=(), required=False, label="Or split by the values of")

    def __init__(self, *args, columns=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "—"), *[(c, c) for c in columns]]
        self.fields["stratify_column"].choices = choices
        self.fields["by_column"].choices = choices


class TokenizerForm(forms.Form):
    name = forms.CharField(max_length=120)
    algorithm = forms.ChoiceField(
        choices=[("bpe", "Byte-level BPE"), ("wordpiece", "WordPiece"), ("unigram", "Unigram")]
    )
    # Bounds are checked once, by the runtime's TokenizerParams (the service calls it).
    vocab_size = forms.IntegerField(initial=8000)
    min_frequency = forms.IntegerField(initial=2)
    lowercase = forms.BooleanField(required=False)


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
    so the form, the API and the runtime validate the same ranges."""

    name = forms.CharField(max_length=120)
    kind = forms.ChoiceField(choices=())
    base_source = forms.ChoiceField(choices=(), label="Start from")
    family = forms.ChoiceField(choices=(), required=False, label="Architecture")
    size = forms.ChoiceField(choices=(), required=False)
    base_model_version = forms.ChoiceField(choices=(), required=False, label="Model version")
    base_path = forms.CharField(required=False, label="Local model directory")
    hub_model_id = forms.CharField(
        required=False, label="Hub model id", help_text="Only then is anything downloaded."
    )
    tokenizer = forms.ChoiceField(choices=(), required=False)
    train_version = forms.ChoiceField(choices=(), label="Dataset version")
    train_split = forms.CharField(
        required=False, initial="train", help_text="Leave empty to train on the whole version."
    )
    eval_split = forms.CharField(required=False, initial="validation")
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
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
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
        self.fields["base_model_version"].choices = [("", "—")] + [
            (str(v.pk), str(v)) for v in model_versions
        ]
        self.fields["tokenizer"].choices = [("", "—")] + [(str(t.pk), str(t)) for t in tokenizers]
        self.fields["train_version"].choices = [
            (
                str(v.pk),
                f"{v} ({v.row_count:,} rows"
                + (
                    f"; splits {', '.join(s.name for s in v.splits.all())}"
                    if v.splits.all()
                    else ""
                )
                + ")",
            )
            for v in versions
        ]
        self.hyperparameter_names = []
        self.lora_names = []
        self.hyperparameter_specs = {spec["name"]: spec for spec in hyperparameters}
        for spec in hyperparameters:
            self.fields[f"hp_{spec['name']}"] = _hyperparameter_field(spec)
            self.hyperparameter_names.append(spec["name"])
            if spec.get("lora_only"):
                self.lora_names.append(spec["name"])

    def hyperparameters(self) -> dict:
        return {
            name: self.cleaned_data[f"hp_{name}"]
            for name in self.hyperparameter_names
            if self.cleaned_data.get(f"hp_{name}") not in (None, "")
        }

    def clean_sweep_space(self) -> dict:
        """Parse the search space text into the dict ``training.services.sweep_launch`` takes."""
        space: dict = {}
        lines = (line.strip() for line in self.cleaned_data["sweep_space"].splitlines())
        for number, line in enumerate(lines, start=1):
            if not line or line.startswith("#"):
                continue
            name, colon, values = (part.strip() for part in line.partition(":"))
            if not colon or not values:
                raise forms.ValidationError(f"Line {number}: write 'name: values'.")
            spec = self.hyperparameter_specs.get(name)
            if spec is None:
                raise forms.ValidationError(
                    f"Line {number}: '{name}' is not a hyperparameter; choose from "
                    + ", ".join(self.hyperparameter_names)
                    + "."
                )
            if name in space:
                raise forms.ValidationError(f"Line {number}: '{name}' is given twice.")
            space[name] = _sweep_values(values, spec, line_number=number)
        return space

    def clean(self) -> dict:
        cleaned = super().clean()
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
    if kind == "bool":
        return forms.BooleanField(**common)
    return forms.CharField(**{**common, "required": False})


def _evaluation_setting_field(name: str, **kwargs) -> forms.Field:
    """A form field for one row of the evaluation runtime's settings table (plain Python, no
    torch), so the form has no bounds or defaults of its own."""
    from evaluation.runtime.config import SETTINGS

    setting = next(s for s in SETTINGS if s.name == name)
    field_class = forms.IntegerField if setting.type == "int" else forms.FloatField
    return field_class(
        initial=setting.default,
        required=setting.default is not None,
        min_value=setting.min,
        max_value=setting.max,
        help_text=setting.help,
        **kwargs,
    )


class EvaluationForm(forms.Form):
    model_version = forms.ChoiceField(choices=(), label="Model version")
    dataset_version = forms.ChoiceField(choices=(), label="Dataset version")
    split = forms.CharField(
        initial="test", required=False, help_text="Leave empty to evaluate on the whole version."
    )
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

    def __init__(self, *args, models=(), versions=(), task_type: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        models = list(models)
        # A version with warnings (a diverged run) is marked, and never the one proposed.
        self.fields["model_version"].choices = [
            (str(m.pk), f"{m} (warnings)" if m.warnings else str(m)) for m in models
        ]
        clean = [m for m in models if not m.warnings]
        if clean:
            self.initial.setdefault("model_version", str(clean[0].pk))
        self.fields["dataset_version"].choices = [
            (
                str(v.pk),
                f"{v}"
                + (
                    f" (splits: {', '.join(s.name for s in v.splits.all())})"
                    if v.splits.all()
                    else ""
                ),
            )
            for v in versions
        ]
        self.fields["metrics"].choices = [
            (m.name, m.label) for m in METRICS.values() if task_type in m.tasks
        ]

    def settings(self) -> dict:
        data = self.cleaned_data
        settings = {k: data[k] for k in ("max_new_tokens", "temperature", "top_p", "num_beams")}
        if data.get("max_examples"):
            settings["max_examples"] = data["max_examples"]
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
        self.fields["model_version"].choices = [(str(m.pk), str(m)) for m in models]
        self.fields["probe_version"].choices = [("", "built-in")] + [
            (str(v.pk), str(v)) for v in versions
        ]

    def params(self) -> dict:
        limit = self.cleaned_data.get("limit")
        if not limit:
            return {}
        key = "max_prompts_per_group" if self.cleaned_data["kind"] == "bold" else "max_pairs"
        return {key: limit}
