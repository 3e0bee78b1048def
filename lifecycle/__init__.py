"""A run's life cycle outside Prefect: its settings, run folder and state folder, the export files, push
execution with resume, the report and progress. May touch files and the network; never Prefect."""
