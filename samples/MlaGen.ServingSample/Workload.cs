using System;
using System.Collections.Generic;
using MlaGen.Cache;

namespace MlaGen.ServingSample;

/// <summary>One request: it arrives at a step, joins when a sequence slot and its pages are free, prefills its prompt
/// in chunks, decodes one token per step, and leaves, handing its pages back.</summary>
internal sealed class Request
{
    public Request(int index, int arrivalStep, int promptTokens, int decodeTokens)
    {
        Index = index;
        ArrivalStep = arrivalStep;
        PromptTokens = promptTokens;
        DecodeTokens = decodeTokens;
    }

    public int Index { get; }
    public int ArrivalStep { get; }
    public int PromptTokens { get; }

    /// <summary>Tokens generated after the prompt, one per step.</summary>
    public int DecodeTokens { get; }

    public int TotalTokens => PromptTokens + DecodeTokens;
    public SequenceId Sequence { get; set; }
    public int Prefilled { get; set; }
    public int Decoded { get; set; }
    public int JoinedStep { get; set; } = -1;
    public int LeftStep { get; set; } = -1;
    public bool InPrefill => Prefilled < PromptTokens;
    public bool Finished => !InPrefill && Decoded >= DecodeTokens;

    /// <summary>Tokens this request holds in the cache: its position for the next token.</summary>
    public int CachedTokens => Prefilled + Decoded;
}

/// <summary>The requests of one run, reproducible from the seed.</summary>
internal static class Workload
{
    /// <summary>
    /// Request 0 is the long-context one: exactly <see cref="ServingSettings.PromptMax"/> prompt tokens. The others
    /// draw their prompt log-uniformly from [PromptMin, PromptMax] (many short prompts, a few long ones, as chat
    /// traffic has) and their decode length uniformly from [DecodeMin, DecodeMax].
    /// </summary>
    public static List<Request> Create(ServingSettings s, Random random)
    {
        var requests = new List<Request>(s.Requests);
        for (int i = 0; i < s.Requests; i++)
        {
            int prompt = i == 0
                ? s.PromptMax
                : (int)Math.Round(Math.Exp(Math.Log(s.PromptMin) + random.NextDouble() * (Math.Log(s.PromptMax) - Math.Log(s.PromptMin))));
            prompt = Math.Clamp(prompt, s.PromptMin, s.PromptMax);
            int decode = random.Next(s.DecodeMin, s.DecodeMax + 1);
            requests.Add(new Request(i, i * s.ArrivalInterval, prompt, decode));
        }
        return requests;
    }
}

/// <summary>
/// Hidden states for every (request, position): rows of a fixed random pool, so a long run costs no random-number
/// generation per token. A real server would feed the previous layer's output here.
/// </summary>
internal sealed class HiddenStates
{
    private readonly float[] _pool;
    private readonly int _rows;
    private readonly int _width;

    public HiddenStates(int rows, int width, Random random)
    {
        _rows = rows;
        _width = width;
        _pool = new float[(long)rows * width];
        for (long i = 0; i < _pool.Length; i++)
            _pool[i] = (float)(random.NextDouble() * 2 - 1);
    }

    public ReadOnlySpan<float> Row(int request, int position)
    {
        long mixed = ((long)request * 7919 + (long)position * 104729) % _rows;
        return _pool.AsSpan((int)mixed * _width, _width);
    }
}
