import django_filters

from datasets_app.models import CleaningRecipe, DataJob, Dataset, DatasetVersion, Tokenizer


class DatasetFilterSet(django_filters.FilterSet):
    class Meta:
        model = Dataset
        fields = {"project": ["exact"], "name": ["exact"]}


class VersionFilterSet(django_filters.FilterSet):
    class Meta:
        model = DatasetVersion
        fields = {"dataset": ["exact"], "parent": ["exact"], "content_sha256": ["exact"]}


class RecipeFilterSet(django_filters.FilterSet):
    class Meta:
        model = CleaningRecipe
        fields = {"project": ["exact"], "name": ["exact"]}


class TokenizerFilterSet(django_filters.FilterSet):
    class Meta:
        model = Tokenizer
        fields = {"project": ["exact"], "algorithm": ["exact"]}


class DataJobFilterSet(django_filters.FilterSet):
    class Meta:
        model = DataJob
        fields = {
            "project": ["exact"],
            "dataset": ["exact"],
            "kind": ["exact"],
            "status": ["exact"],
            "source_version": ["exact"],
        }
