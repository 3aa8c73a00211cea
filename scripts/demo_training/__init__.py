"""Trainers for the bundled demo models, one module per task (run by ``scripts/train_demo_models.py``)."""
