"""First-party rewards. Heavy dependencies (insightface, cv2, dlib, VLMs) load inside each reward."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_rewards(register):
    pass
