"""The ``relidar`` console command."""
