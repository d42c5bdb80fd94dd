"""Heat-map overlays for people (OpenCV): the part, its anomaly map in colour, the verdict."""

from __future__ import annotations

import cv2
import numpy as np

from anomaly.imageio import to_uint8_rgb


def heatmap_rgb(amap: np.ndarray, *, vmin: float, vmax: float) -> np.ndarray:
    """Colour an ``(H, W)`` map with a fixed scale (JET), ``(H, W, 3)`` uint8 RGB.

    A fixed ``vmin``/``vmax`` (from the model's calibration, never from the image itself)
    keeps colours comparable between parts: a good part stays blue.
    """
    span = max(vmax - vmin, 1e-12)
    norm = np.clip((amap - vmin) / span, 0.0, 1.0)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return colour[:, :, ::-1]


def overlay(image: np.ndarray, amap: np.ndarray, *, vmin: float, vmax: float, alpha: float = 0.45,
            label: str | None = None, contour_at: float | None = None) -> np.ndarray:
    """Blend the map over the image, optionally outline pixels above ``contour_at`` and write a label.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` canonical image.
        amap: ``(H, W)`` anomaly map of that image.
        vmin: Map value shown as the coldest colour.
        vmax: Map value shown as the hottest colour.
        alpha: Weight of the heat map.
        label: Text drawn in the top-left corner (e.g. ``"NG 1.42"``).
        contour_at: Map value whose level set is outlined in white.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    base = to_uint8_rgb(image)
    heat = heatmap_rgb(amap, vmin=vmin, vmax=vmax)
    out = cv2.addWeighted(base, 1.0 - alpha, heat, alpha, 0.0)
    if contour_at is not None:
        mask = (amap >= contour_at).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, min(out.shape[:2]) // 256))
    if label:
        scale = max(0.4, min(out.shape[:2]) / 400)
        thick = max(1, int(round(scale * 2)))
        (tw, th), base_line = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(out, (0, 0), (tw + 8, th + base_line + 8), (0, 0, 0), -1)
        colour = (255, 80, 80) if label.startswith("NG") else (255, 200, 0) if label.startswith("REVIEW") else (80, 255, 80)
        cv2.putText(out, label, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out
