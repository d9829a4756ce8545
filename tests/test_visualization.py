"""The serialization figure: written for square and non-square images and any band count,
and the token grids it draws are the serializer's band grids."""
import os
import runpy

import matplotlib

matplotlib.use('Agg')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mmglobalmamba.models.layers import FrequencySerializer  # noqa: E402
from mmglobalmamba.visualization import (make_example_image, plot_serialization,  # noqa
                                         scan_layout)

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('size,num_bands', [
    ((96, 96), 4),      # square
    ((80, 144), 4),     # non-square
    ((64, 200), 3),     # non-default band count
    ((40, 24), 2),      # not a multiple of the patch: the grid covers whole patches only
])
def test_figure_written_and_grids_match(tmp_path, size, num_bands):
    out = tmp_path / 'serialization.png'
    res = plot_serialization(make_example_image(size), num_bands=num_bands, out=str(out))
    assert out.read_bytes()[:8] == PNG_MAGIC
    grids = FrequencySerializer(num_bands, 16).band_grids(*size)
    assert res.grids == grids
    assert res.image_size == size
    N = sum(h * w for h, w in grids)
    assert res.cls_position == N // 2
    # bands tile the scanned sequence 0..N (cls included) in order, low to high
    assert res.band_ranges[0][0] == 0 and res.band_ranges[-1][1] == N + 1
    assert all(a[1] == b[0] for a, b in zip(res.band_ranges, res.band_ranges[1:]))
    assert [len(c) for c in res.centers] == [h * w for h, w in grids]


def test_scan_layout_positions_skip_cls():
    lay = scan_layout(224, 224)
    assert lay['grids'] == [(1, 1), (3, 3), (7, 7), (14, 14)]
    pos = np.concatenate(lay['positions'])
    assert lay['cls_position'] == 127
    assert sorted(pos.tolist()) == [p for p in range(256) if p != 127]
    # row-major centres: the first two tokens of the 14x14 band lie in row 0
    c = lay['centers'][3]
    assert c[0].tolist() == [8.0, 8.0] and c[1].tolist() == [24.0, 8.0]


def test_tool_writes_png_from_file(tmp_path, capsys):
    """tools/visualize_serialization.py, in-process through its main(argv)."""
    from PIL import Image
    tool = runpy.run_path(os.path.join(ROOT, 'tools', 'visualize_serialization.py'))
    src = tmp_path / 'in.png'
    Image.fromarray(make_example_image((50, 70))).save(src)
    out = tmp_path / 'out.png'
    tool['main']([str(src), '--out', str(out), '--size', '64', '96', '--num-bands', '3',
                  '--palette'])
    assert f'wrote {out}' in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as im:
        assert im.mode == 'P'
