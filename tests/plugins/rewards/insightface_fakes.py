"""Tiny ONNX models with the signatures insightface routes on: a SCRFD-style detector and an ArcFace-style
recognizer. insightface loads them through its own model zoo, so the reward's real loading path runs.

The detector "finds" bright regions: its score map is a sigmoid of the mean brightness pooled at strides
8/16/32, with constant box distances and 5 keypoints, so a bright square on black is one face and a black
frame has none. The recognizer is a small random conv net (an embedding of the aligned 112×112 crop).
"""

from pathlib import Path

import torch
from torch import nn


class FakeSCRFD(nn.Module):
    strides = (8, 16, 32)

    def forward(self, x):  # x: [1, 3, H, W], normalised as (pixel - 127.5) / 128
        brightness = x.mean(dim=1, keepdim=True)
        scores, boxes, points = [], [], []
        for stride in self.strides:
            pooled = nn.functional.avg_pool2d(brightness, stride, stride)  # [1, 1, h, w]
            score = torch.sigmoid(20.0 * pooled - 10.0).reshape(-1, 1).repeat_interleave(2, dim=0)
            scores.append(score)
            boxes.append(torch.zeros_like(score).expand(-1, 4) + 2.0)  # a 4·stride box around the anchor
            offsets = torch.tensor([-0.6, -0.5, 0.6, -0.5, 0.0, 0.1, -0.5, 0.7, 0.5, 0.7])
            points.append(torch.zeros_like(score).expand(-1, 10) + offsets)
        return (*scores, *boxes, *points)


class FakeArcFace(nn.Module):
    def __init__(self, dim=64):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 16, 5, 4), nn.ReLU(), nn.Conv2d(16, 32, 3, 2), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, dim))

    def forward(self, x):
        return self.features(x)


def write_fake_pack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    detector_outputs = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in FakeSCRFD.strides]
    torch.onnx.export(FakeSCRFD(), torch.zeros(1, 3, 160, 160), folder / "det_fake.onnx", input_names=["image"],
                      output_names=detector_outputs, dynamic_axes={"image": {2: "height", 3: "width"}},
                      opset_version=17, dynamo=False)
    torch.onnx.export(FakeArcFace().eval(), torch.zeros(1, 3, 112, 112), folder / "w600k_fake.onnx",
                      input_names=["face"], output_names=["embedding"],
                      dynamic_axes={"face": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17, dynamo=False)
    return folder
