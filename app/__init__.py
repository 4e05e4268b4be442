"""The Celery side: schemas, stage functions, Redis store, task adapters, chain builder.

`celery -A app …` finds the Celery instance in `app.celery`; importing this package does not
create it, so the producer can use the schemas without configuring Celery.
"""
