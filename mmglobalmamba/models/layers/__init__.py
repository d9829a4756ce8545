from .dct import dct_2d, dct_basis, idct_2d
from .mamba import MambaBlock, MambaMixer, RMSNorm
from .positions import resize_band_pos_embed
from .serializer import FrequencySerializer, RasterSerializer, split_tokens

__all__ = ['dct_2d', 'idct_2d', 'dct_basis', 'MambaBlock', 'MambaMixer', 'RMSNorm',
           'resize_band_pos_embed', 'FrequencySerializer', 'RasterSerializer',
           'split_tokens']
