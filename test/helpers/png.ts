// A tiny PNG decoder for screenshots (what Chromium writes): 8-bit greyscale, grey+alpha, RGB or RGBA,
// not interlaced, all five filter types. Enough to look at pixels in a test; anything else is refused.
import { inflateSync } from 'node:zlib'

export interface Image {
  width: number
  height: number
  /** RGBA, 4 bytes a pixel, rows top to bottom. */
  rgba: Uint8Array
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
/** Channels per colour type: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA (3, palette, is not supported). */
const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 4: 2, 6: 4 }

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

export function decodePng(png: Buffer): Image {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG')
  let width = 0
  let height = 0
  let channels = 0
  const data: Buffer[] = []
  for (let at = 8; at < png.length;) {
    const length = png.readUInt32BE(at)
    const type = png.toString('latin1', at + 4, at + 8)
    const body = png.subarray(at + 8, at + 8 + length)
    at += 12 + length // length, type, body, CRC
    if (type === 'IHDR') {
      width = body.readUInt32BE(0)
      height = body.readUInt32BE(4)
      const [depth, colour, , , interlace] = [body[8], body[9], body[10], body[11], body[12]]
      channels = CHANNELS[colour ?? -1] ?? 0
      if (depth !== 8 || channels === 0 || interlace !== 0)
        throw new Error(`unsupported PNG: depth ${depth}, colour type ${colour}, interlace ${interlace}`)
    } else if (type === 'IDAT') data.push(body)
    else if (type === 'IEND') break
  }
  if (width === 0 || height === 0) throw new Error('PNG without IHDR')

  const raw = inflateSync(Buffer.concat(data))
  const stride = width * channels
  if (raw.length < height * (stride + 1)) throw new Error('PNG data too short')
  const pixels = new Uint8Array(height * stride)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)] ?? -1
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1))
    const out = y * stride
    for (let i = 0; i < stride; i++) {
      const x = line[i] ?? 0
      const a = i >= channels ? (pixels[out + i - channels] ?? 0) : 0 // left
      const b = y > 0 ? (pixels[out - stride + i] ?? 0) : 0 // up
      const c = y > 0 && i >= channels ? (pixels[out - stride + i - channels] ?? 0) : 0 // up-left
      let value: number
      switch (filter) {
        case 0:
          value = x
          break
        case 1:
          value = x + a
          break
        case 2:
          value = x + b
          break
        case 3:
          value = x + ((a + b) >> 1)
          break
        case 4:
          value = x + paeth(a, b, c)
          break
        default:
          throw new Error(`bad PNG filter type ${filter} in row ${y}`)
      }
      pixels[out + i] = value & 0xff
    }
  }

  const rgba = new Uint8Array(width * height * 4)
  for (let p = 0; p < width * height; p++) {
    const s = p * channels
    const grey = channels < 3
    const [r, g, b] = grey ? [pixels[s], pixels[s], pixels[s]] : [pixels[s], pixels[s + 1], pixels[s + 2]]
    const alpha = channels === 4 ? pixels[s + 3] : channels === 2 ? pixels[s + 1] : 255
    rgba.set([r ?? 0, g ?? 0, b ?? 0, alpha ?? 255], p * 4)
  }
  return { width, height, rgba }
}

/** The pixel at (x, y) as [r, g, b, a]. */
export function pixel(image: Image, x: number, y: number): [number, number, number, number] {
  const i = (y * image.width + x) * 4
  const { rgba } = image
  return [rgba[i] ?? 0, rgba[i + 1] ?? 0, rgba[i + 2] ?? 0, rgba[i + 3] ?? 0]
}
