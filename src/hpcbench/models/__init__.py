"""Models and published figures: the hardware peaks, the GEMM roofline, the collective cost
model, and the published anchors (conf/anchors.yaml) that results are compared with."""
