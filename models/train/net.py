"""The capillary segmentation network: a compact U-Net sized for real-time CPU inference.

Input: N x 2 x H x W (channel 0: green of RGB / luma of grayscale, channel 1: redness, zero for
grayscale cameras), values 0..1, H and W multiples of 16. Output: N x 1 x H x W vessel probability.

Why this shape: most of the compute sits at 1/2 to 1/8 resolution, the full-resolution layers are
narrow (cost per pixel is what limits frames/s on two CPU cores), skip connections are added rather
than concatenated (halves the decoder cost), and the image is standardised inside the graph so the
exposure and gain of a camera do not matter.
"""

import torch
from torch import nn
import torch.nn.functional as F


def conv(cin, cout, stride=1, dilation=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CapillaryNet(nn.Module):
    def __init__(self, c=(8, 16, 48, 96)):
        super().__init__()
        c1, c2, c3, c4 = c
        # Stride 2 from the first layer: no convolution runs at full resolution.
        self.enc1 = conv(3, c1, stride=2)
        self.enc2 = nn.Sequential(conv(c1, c2, stride=2), conv(c2, c2))
        self.enc3 = nn.Sequential(conv(c2, c3, stride=2), conv(c3, c3))
        self.enc4 = nn.Sequential(conv(c3, c4, stride=2), conv(c4, c4, dilation=2), conv(c4, c4, dilation=4))
        self.lat4 = nn.Conv2d(c4, c3, 1)
        self.dec3 = conv(c3, c2)
        self.dec2 = conv(c2, c1)
        self.dec1 = conv(c1, c1)
        # Sub-pixel head: 4 logits per half-resolution pixel, rearranged to full resolution.
        self.head = nn.Conv2d(c1, 4, 1)

    def forward(self, x):
        luma = x[:, 0:1]
        mean = luma.mean(dim=(2, 3), keepdim=True)
        std = luma.std(dim=(2, 3), keepdim=True) + 0.02
        # Standardised luma, how dark relative to the frame, and redness as given.
        z = torch.cat([(luma - mean) / std, luma, x[:, 1:2] * 4.0], dim=1)
        e1 = self.enc1(z)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(e3 + F.interpolate(self.lat4(e4), scale_factor=2.0, mode="bilinear", align_corners=False))
        d2 = self.dec2(e2 + F.interpolate(d3, scale_factor=2.0, mode="bilinear", align_corners=False))
        d1 = self.dec1(e1 + F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False))
        return F.pixel_shuffle(self.head(d1), 2)


def export(model, path, opset=17):
    """Exports with dynamic batch/height/width and a sigmoid on the logits."""

    class WithSigmoid(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return torch.sigmoid(self.inner(image))

    wrapped = WithSigmoid(model).eval()
    dummy = torch.zeros(1, 2, 64, 64)
    torch.onnx.export(
        wrapped,
        (dummy,),
        path,
        input_names=["image"],
        output_names=["prob"],
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "prob": {0: "n", 2: "h", 3: "w"}},
        opset_version=opset,
        dynamo=False,
    )
