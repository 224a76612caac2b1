//! Checkpoint tensors: shapes, packing, unpacking and the dequantize-matmul.

use std::ptr;

use gptq_sys as sys;

use crate::context::Context;
use crate::error::{check, Error};
use crate::layer::expect_len;

/// Where the zero points are stored as zero - 1 ("gptq") or as they are ("gptq_v2").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
}

impl Format {
    pub(crate) fn raw(self) -> i32 {
        match self {
            Format::V1 => sys::GPTQ_FORMAT_V1,
            Format::V2 => sys::GPTQ_FORMAT_V2,
        }
    }
}

/// How v1 words are written (see GPTQ_PACK_* in gptq.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackMode {
    Clean,
    AutoGptq,
    GptqModel,
}

impl PackMode {
    pub(crate) fn raw(self) -> i32 {
        match self {
            PackMode::Clean => sys::GPTQ_PACK_CLEAN,
            PackMode::AutoGptq => sys::GPTQ_PACK_AUTOGPTQ,
            PackMode::GptqModel => sys::GPTQ_PACK_GPTQMODEL,
        }
    }
}

/// Number of groups for `in_features` columns (`None` for invalid arguments).
pub fn num_groups(in_features: i64, group_size: i32) -> Option<i64> {
    let n = unsafe { sys::gptq_num_groups(in_features, group_size) };
    if n < 0 {
        None
    } else {
        Some(n)
    }
}

/// Shapes of qweight and qzeros: ([ceil(in*bits/32), out], [ngroups, ceil(out*bits/32)]).
pub fn packed_shape(bits: i32, out_features: i64, in_features: i64, ngroups: i64) -> Result<([i64; 2], [i64; 2]), Error> {
    let (mut qw, mut qz) = ([0i64; 2], [0i64; 2]);
    check(unsafe { sys::gptq_packed_shape(bits, out_features, in_features, ngroups, qw.as_mut_ptr(), qz.as_mut_ptr()) }, ptr::null())?;
    Ok((qw, qz))
}

pub fn fp32_to_fp16(f: f32) -> u16 {
    unsafe { sys::gptq_fp32_to_fp16(f) }
}

pub fn fp16_to_fp32(h: u16) -> f32 {
    unsafe { sys::gptq_fp16_to_fp32(h) }
}

fn len(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// A layer's checkpoint tensors: qweight [ceil(in*bits/32), out], qzeros [ngroups,
/// ceil(out*bits/32)], scales [ngroups, out] (float16 bit patterns), g_idx [in].
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub bits: i32,
    pub format: Format,
    pub out_features: i64,
    pub in_features: i64,
    pub ngroups: i64,
    pub qweight_shape: [i64; 2],
    pub qzeros_shape: [i64; 2],
    pub qweight: Vec<i32>,
    pub qzeros: Vec<i32>,
    pub scales: Vec<u16>,
    pub g_idx: Vec<i32>,
}

impl Packed {
    /// Zeroed tensors of the right sizes.
    pub fn zeroed(bits: i32, format: Format, out_features: i64, in_features: i64, ngroups: i64) -> Result<Packed, Error> {
        let (qw, qz) = packed_shape(bits, out_features, in_features, ngroups)?;
        Ok(Packed {
            bits,
            format,
            out_features,
            in_features,
            ngroups,
            qweight_shape: qw,
            qzeros_shape: qz,
            qweight: vec![0; len(qw[0]) * len(qw[1])],
            qzeros: vec![0; len(qz[0]) * len(qz[1])],
            scales: vec![0; len(ngroups) * len(out_features)],
            g_idx: vec![0; len(in_features)],
        })
    }

    fn check_sizes(&self) -> Result<(), Error> {
        expect_len("qweight", self.qweight.len(), self.qweight_shape[0], self.qweight_shape[1])?;
        expect_len("qzeros", self.qzeros.len(), self.qzeros_shape[0], self.qzeros_shape[1])?;
        expect_len("scales", self.scales.len(), self.ngroups, self.out_features)?;
        expect_len("g_idx", self.g_idx.len(), self.in_features, 1)
    }

    /// The C view of these buffers, valid while `self` is not changed.
    pub(crate) fn c_view(&mut self) -> sys::gptq_packed {
        sys::gptq_packed {
            bits: self.bits,
            format: self.format.raw(),
            out_features: self.out_features,
            in_features: self.in_features,
            ngroups: self.ngroups,
            qweight: self.qweight.as_mut_ptr(),
            qzeros: self.qzeros.as_mut_ptr(),
            scales: self.scales.as_mut_ptr(),
            g_idx: self.g_idx.as_mut_ptr(),
        }
    }

    /// Codes, float32 scales, true zero points and g_idx.
    pub fn unpack(&mut self, ctx: &Context, mode: PackMode) -> Result<Unpacked, Error> {
        self.check_sizes()?;
        let mut u = Unpacked::zeroed(self.bits, self.out_features, self.in_features, self.ngroups);
        let src = self.c_view();
        let mut dst = u.c_view();
        ctx.check(unsafe { sys::gptq_unpack(ctx.as_ptr(), &src, mode.raw(), &mut dst) })?;
        Ok(u)
    }

    /// y [batch, out] = x [batch, in] * Wq^T (+ bias [out]), from the packed tensors.
    pub fn matmul(&mut self, ctx: &Context, x: &[f32], batch: i64, bias: Option<&[f32]>) -> Result<Vec<f32>, Error> {
        self.check_sizes()?;
        expect_len("x", x.len(), batch, self.in_features)?;
        if let Some(b) = bias {
            expect_len("bias", b.len(), self.out_features, 1)?;
        }
        let mut y = vec![0.0f32; len(batch) * len(self.out_features)];
        let w = self.c_view();
        let b = bias.map_or(ptr::null(), |b| b.as_ptr());
        ctx.check(unsafe { sys::gptq_dequant_matmul(ctx.as_ptr(), &w, x.as_ptr(), batch, b, y.as_mut_ptr()) })?;
        Ok(y)
    }
}

/// A layer's quantized tensors, unpacked: codes [out, in], scales [ngroups, out],
/// true zero points [ngroups, out], g_idx [in]; `q` [out, in] only for PackMode::AutoGptq.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    pub bits: i32,
    pub group_size: i32,
    pub out_features: i64,
    pub in_features: i64,
    pub ngroups: i64,
    pub codes: Vec<i32>,
    pub scales: Vec<f32>,
    pub zeros: Vec<i32>,
    pub g_idx: Vec<i32>,
    pub q: Option<Vec<f32>>,
}

impl Unpacked {
    pub fn zeroed(bits: i32, out_features: i64, in_features: i64, ngroups: i64) -> Unpacked {
        Unpacked {
            bits,
            group_size: -1,
            out_features,
            in_features,
            ngroups,
            codes: vec![0; len(out_features) * len(in_features)],
            scales: vec![0.0; len(ngroups) * len(out_features)],
            zeros: vec![0; len(ngroups) * len(out_features)],
            g_idx: vec![0; len(in_features)],
            q: None,
        }
    }

    fn c_view(&mut self) -> sys::gptq_unpacked {
        sys::gptq_unpacked {
            bits: self.bits,
            group_size: self.group_size,
            out_features: self.out_features,
            in_features: self.in_features,
            ngroups: self.ngroups,
            codes: self.codes.as_mut_ptr(),
            scales: self.scales.as_mut_ptr(),
            zeros: self.zeros.as_mut_ptr(),
            g_idx: self.g_idx.as_mut_ptr(),
            q: self.q.as_mut().map_or(ptr::null_mut(), |q| q.as_mut_ptr()),
        }
    }

    /// Pack into checkpoint tensors.
    pub fn pack(&mut self, ctx: &Context, format: Format, mode: PackMode) -> Result<Packed, Error> {
        expect_len("codes", self.codes.len(), self.out_features, self.in_features)?;
        expect_len("scales", self.scales.len(), self.ngroups, self.out_features)?;
        expect_len("zeros", self.zeros.len(), self.ngroups, self.out_features)?;
        expect_len("g_idx", self.g_idx.len(), self.in_features, 1)?;
        if let Some(q) = &self.q {
            expect_len("q", q.len(), self.out_features, self.in_features)?;
        }
        let mut p = Packed::zeroed(self.bits, format, self.out_features, self.in_features, self.ngroups)?;
        let src = self.c_view();
        let mut dst = p.c_view();
        ctx.check(unsafe { sys::gptq_pack(ctx.as_ptr(), &src, mode.raw(), &mut dst) })?;
        Ok(p)
    }
}
