"""relidar.training: dataset readers, teachers, losses, the distillation loop, evaluation, reports."""
