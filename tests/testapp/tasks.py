"""Callbacks for the tests, found by django_taskshed's autodiscovery of ``tasks`` modules."""
