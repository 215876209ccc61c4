"""mastery: the AI/ML Mastery Roadmap as one runnable, tested system."""

__version__ = "0.1.0"
