import django_filters

from training.models import ModelVersion, RegisteredModel, Sweep, TrainingJob


class TrainingJobFilterSet(django_filters.FilterSet):
    class Meta:
        model = TrainingJob
        fields = {
            "project": ["exact"],
            "status": ["exact"],
            "kind": ["exact"],
            "sweep": ["exact"],
            "external": ["exact"],
            "train_version": ["exact"],
        }


class SweepFilterSet(django_filters.FilterSet):
    class Meta:
        model = Sweep
        fields = {"project": ["exact"]}


class RegisteredModelFilterSet(django_filters.FilterSet):
    class Meta:
        model = RegisteredModel
        fields = {"project": ["exact"], "name": ["exact"]}


class ModelVersionFilterSet(django_filters.FilterSet):
    project = django_filters.NumberFilter(field_name="registered_model__project")

    class Meta:
        model = ModelVersion
        fields = {
            "registered_model": ["exact"],
            "stage": ["exact"],
            "task_kind": ["exact"],
            "dataset_version": ["exact"],
        }
