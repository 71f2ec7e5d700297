"""Shared REST API building blocks: error shape, pagination, scoped viewsets, strict serializers."""
