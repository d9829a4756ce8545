"""Model analysis: parameter and FLOP counts with the selective scan and DCT counted."""
from .complexity import (FLOP_HANDLES, SCAN_OP, analyze_complexity, classifier_param_count,
                         format_count, matmul_flop_jit, selective_scan_flop_jit,
                         selective_scan_flops, traceable_scan)

__all__ = [
    'FLOP_HANDLES', 'SCAN_OP', 'analyze_complexity', 'classifier_param_count', 'format_count',
    'matmul_flop_jit', 'selective_scan_flop_jit', 'selective_scan_flops', 'traceable_scan'
]
