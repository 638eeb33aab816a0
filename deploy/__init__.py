"""Deploy the QA serving image to Amazon SageMaker: package, create, update, autoscale,
invoke, batch, delete. boto3 only; AWS configuration comes from the standard places
(profiles, AWS_REGION, AWS_ENDPOINT_URL, ...). Run `python -m deploy --help`."""
