"""The Dagster shell: partitions, resources, IO managers, assets and checks around the pure stages."""
