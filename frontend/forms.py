"""Forms of the contributor pages. They only parse and check input; the writes are the accounts and
uploads services'."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from hub_server.accounts.models import ApiToken
from hub_server.catalog.models import Subtask


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="What uses it, e.g. “laptop”.")
    scope = forms.ChoiceField(
        choices=[("read", "read: download private files, whoami"), ("write", "write: upload")],
        initial=ApiToken.Scope.WRITE,
    )
    expires = forms.TypedChoiceField(
        label="Expires",
        choices=[
            ("7", "in 7 days"),
            ("30", "in 30 days"),
            ("90", "in 90 days"),
            ("365", "in a year"),
            ("", "never"),
        ],  # fmt: skip
        initial="90",
        required=False,
        coerce=int,
        empty_value=None,
    )
    organisation = forms.ChoiceField(
        label="Organisation",
        required=False,
        help_text="A token of one organisation can upload only there.",
    )

    def __init__(self, *args, organisations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organisation"].choices = [("", "any of mine")] + [
            (org, org) for org in organisations
        ]

    def expires_at(self):
        days = self.cleaned_data.get("expires")
        return timezone.now() + timedelta(days=days) if days else None


def dataset_choices() -> list:
    """(type|task|subtask, label) grouped by task: every subtask an upload can name."""
    groups: dict[str, list] = {}
    rows = Subtask.objects.values(
        "task__type_id", "task__task", "task__displayname", "subtask", "displayname"
    ).order_by("task__type_id", "task__displayname", "subtask")
    for row in rows:
        kind = "Language" if row["task__type_id"] == "text_lang" else "Task"
        group = f"{kind}: {row['task__displayname']}"
        value = f"{row['task__type_id']}|{row['task__task']}|{row['subtask']}"
        label = f"{row['task__task']}/{row['subtask']} · {row['displayname'] or row['subtask']}"
        groups.setdefault(group, []).append((value, label))
    return [("", "Choose the task and dataset…")] + list(groups.items())


class UploadForm(forms.Form):
    archive = forms.FileField(
        help_text="A .zip of the folder save_adapter wrote (adapter_config.json and weights)."
    )
    dataset = forms.ChoiceField(label="Task and dataset", choices=())
    org = forms.ChoiceField(label="Organisation", required=False, choices=())
    name = forms.CharField(
        required=False,
        max_length=200,
        help_text="Leave empty for <model>_<task>_<subtask>_<architecture>.",
    )
    version = forms.CharField(required=False, max_length=100, help_text="Default: 1")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    author = forms.CharField(required=False, max_length=500)
    github = forms.CharField(required=False, max_length=300, help_text="Handle or profile URL")
    twitter = forms.CharField(required=False, max_length=300, help_text="Handle or profile URL")
    url = forms.URLField(required=False, max_length=1000, label="Website", assume_scheme="https")
    score = forms.FloatField(required=False, help_text="The subtask's metric on its test set")
    citation = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="BibTeX"
    )

    CARD_FIELDS = ("description", "author", "github", "twitter", "url", "score", "citation")

    def __init__(self, *args, organisations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].choices = dataset_choices()
        self.fields["org"].choices = [("", "My personal organisation")] + [
            (org, org) for org in organisations
        ]

    def clean_archive(self):
        archive = self.cleaned_data["archive"]
        if not archive.name.lower().endswith(".zip"):
            raise forms.ValidationError("Upload a .zip of the adapter folder.")
        return archive

    def clean_dataset(self):
        value = self.cleaned_data["dataset"]
        parts = value.split("|")
        if len(parts) != 3:
            raise forms.ValidationError("Choose a task and dataset.")
        return parts

    def card(self) -> dict:
        return {
            key: self.cleaned_data[key]
            for key in self.CARD_FIELDS
            if self.cleaned_data.get(key) not in (None, "")
        }
