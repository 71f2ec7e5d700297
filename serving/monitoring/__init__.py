"""The Monitor stage: dashboards, drift reports and alerts of deployed endpoints."""
