"""Explanation maps and what is made from them: CAM math, the methods registry, boxes, `CamResult`."""
