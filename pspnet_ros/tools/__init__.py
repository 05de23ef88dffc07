"""Development tools on top of the runtime: training, evaluation, data, quantization, bench, bag tools, demo, soak.

Nothing in the runtime (the rest of pspnet_ros) imports this package (.importlinter).
"""
