"""The MultiBox training pipeline: datasets, SSD augmentation, training pack, engine, evaluation."""
