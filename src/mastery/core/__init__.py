"""Framework pieces every lab and app share: errors, config overrides, reports, progress, seeding."""
