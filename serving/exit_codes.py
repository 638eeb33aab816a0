"""The container's exit codes, one per cause (docs/contract.md#lifecycle): SageMaker and `docker
ps -a` show only the number, so each number must say what happened."""

OK = 0  # stopped when asked (SIGTERM), every process by itself
UNCLEAN_STOP = 1  # stopped when asked, but a process had to be killed
CONFIG_ERROR = 2  # a variable is malformed, or a command the image does not run (train)
NGINX_DIED = 3
GUNICORN_DIED = 4  # gunicorn halts when a worker cannot load the model
MODEL_SERVER_DIED = 5  # Multi Model Server exited without being asked to
STARTUP_ERROR = 6  # no model, bad inference code, pip install failed, nginx or java missing
