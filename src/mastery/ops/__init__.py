"""Operations: experiment tracking, and later serving, containers and data versioning."""
