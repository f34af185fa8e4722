"""First-party rewards. Heavy dependencies (insightface, cv2, dlib, VLMs, CLIP) load inside each reward."""

from prefopt.hookspecs import hookimpl


@hookimpl
def register_rewards(register):
    from prefopt_plugins.rewards.dynamics import OpenCVDynamicsReward, RaftDynamicsReward
    from prefopt_plugins.rewards.identity import DlibIdentityReward, InsightFaceIdentityReward
    from prefopt_plugins.rewards.preference import AestheticReward, PickScoreReward
    from prefopt_plugins.rewards.remote import RemoteVLMReward
    from prefopt_plugins.rewards.semantic import ClipSemanticReward, VLMSemanticReward

    register(DlibIdentityReward)
    register(InsightFaceIdentityReward)
    register(OpenCVDynamicsReward)
    register(RaftDynamicsReward)
    register(ClipSemanticReward)
    register(VLMSemanticReward)
    register(RemoteVLMReward)
    register(PickScoreReward)
    register(AestheticReward)
