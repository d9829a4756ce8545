from .dct import dct_2d, dct_basis, idct_2d
from .mamba import MambaBlock, MambaMixer, RMSNorm
from .positions import insert_middle_cls, resize_band_pos_embed, split_middle_cls
from .serializer import FrequencySerializer, RasterSerializer, split_tokens

__all__ = ['dct_2d', 'idct_2d', 'dct_basis', 'MambaBlock', 'MambaMixer', 'RMSNorm',
           'resize_band_pos_embed', 'insert_middle_cls', 'split_middle_cls',
           'FrequencySerializer', 'RasterSerializer', 'split_tokens']
